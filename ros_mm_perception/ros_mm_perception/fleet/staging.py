"""Each recording's outputs appear in one rename, once: they are written to a staging folder inside
the output folder (same file system) and moved into place only when complete.

Only the driver publishes, so a retried recording can never appear twice; a folder left in staging
by a worker that died is removed. One fleet run per output folder at a time (:mod:`.lock`); each
run stages in a folder of its own, and removes what runs that were killed left.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

STAGING_NAME = ".fleet-staging"


class Staging:
    """Staging folders under ``out_dir/.fleet-staging.<run>``, published under ``out_dir``."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.root = self.out_dir / f"{STAGING_NAME}.{uuid.uuid4().hex[:12]}"

    def clear(self) -> None:
        """Remove what interrupted runs left (the caller holds the folder's lock); start empty."""
        for old in self.out_dir.glob(f"{STAGING_NAME}*"):
            shutil.rmtree(old, ignore_errors=True)
        self.root.mkdir(parents=True)

    def new(self, label: str) -> Path:
        """A new empty folder for one attempt at ``label``."""
        path = self.root / f"{label}.{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return path

    @staticmethod
    def discard(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def publish(self, staged: Path, final: Path) -> Path:
        """Move ``staged`` to ``final`` in one rename; an older ``final`` is moved aside first,
        then removed."""
        old = None
        if final.exists():
            old = self.root / f"{final.name}.replaced.{uuid.uuid4().hex[:12]}"
            os.rename(final, old)
        os.rename(staged, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def remove(self) -> None:
        """Remove the staging folder and anything still in it."""
        shutil.rmtree(self.root, ignore_errors=True)
