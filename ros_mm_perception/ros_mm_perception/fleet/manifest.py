"""The manifest of a finished recording: what was read (path, size, mtime), with which options, and
what came out. A rerun skips a recording whose manifest matches; any change labels it again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

MANIFEST_NAME = "manifest.json"


def write_manifest(folder: Path, manifest: Dict) -> None:
    """Write ``manifest`` into a (staged) recording folder."""
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n",
                                        encoding="utf-8")


def matching_manifest(folder: Path, identity: Dict) -> Optional[Dict]:
    """The manifest of ``folder`` when every key of ``identity`` (input, size, mtime, options)
    matches and every output it lists exists; else None."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if any(manifest.get(key) != value for key, value in identity.items()):
        return None
    if not all((folder / name).is_file() for name in manifest.get("outputs", ())):
        return None
    return manifest
