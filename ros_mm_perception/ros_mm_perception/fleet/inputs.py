"""The recordings of a fleet run: arguments expanded, named, and fingerprinted for reruns.

An argument is a recording (rosbag2 folder, ``.mcap``/``.db3`` file, image folder, video), a glob
of them, a folder holding recordings (a day's bags), or a ``.txt``/``.list`` file naming one per
line (``#`` starts a comment; relative lines are relative to the list file). A recording given
twice is labeled once.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

from ros_mm_perception.core.errors import UserError
from ros_mm_perception.offline.sources import BAG_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ros_mm_perception.offline.storage_reading import split_files

LIST_SUFFIXES = (".txt", ".list")


def expand_inputs(arguments: Sequence[str]) -> List[Path]:
    """The recordings the arguments name, as absolute paths, each once, in argument order."""
    seen: Dict[Path, None] = {}
    for argument in arguments:
        for path in _expand(argument, Path.cwd()):
            seen.setdefault(path.resolve(), None)
    if not seen:
        raise UserError("no recordings given")
    return list(seen)


def _expand(text: str, base: Path) -> Iterator[Path]:
    pattern = base / Path(text).expanduser()
    if glob.has_magic(text):
        matches = [Path(m) for m in sorted(glob.glob(str(pattern), recursive=True))]
        if not matches:
            raise UserError(f"no file matches {text}")
    else:
        matches = [pattern]
    for path in matches:
        if not path.exists():
            raise UserError(f"input not found: {path}")
        if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    yield from _expand(line, path.parent)
        elif path.is_dir() and not is_recording(path):
            children = sorted(child for child in path.iterdir() if is_recording(child))
            if not children:
                raise UserError(f"{path} holds no recordings (rosbag2 folders, "
                                f"{', '.join(BAG_SUFFIXES)} files, image folders or videos)")
            yield from children
        else:
            yield path


def is_recording(path: Path) -> bool:
    """Whether ``path`` is one recording: a rosbag2 folder or file, an image folder or a video."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file() or bool(split_files(path)) or any(
            p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in path.iterdir())
    return path.suffix.lower() in BAG_SUFFIXES + VIDEO_SUFFIXES


def output_names(paths: Sequence[Path], reserved: Sequence[str] = ()) -> List[str]:
    """A folder name per recording: its file or folder name without suffix, made safe; names that
    two recordings share, or that are ``reserved`` (the run's own files), get a short hash of their
    path."""
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "_", p.stem if p.is_file() else p.name).strip("._")
             or "recording"
             for p in paths]
    counts: Dict[str, int] = {name.lower(): 2 for name in reserved}
    for stem in stems:
        counts[stem.lower()] = counts.get(stem.lower(), 0) + 1
    return [stem if counts[stem.lower()] == 1
            else f"{stem}-{hashlib.sha1(str(p).encode()).hexdigest()[:8]}"
            for stem, p in zip(stems, paths)]


def fingerprint(path: Path) -> Tuple[int, int]:
    """(total size in bytes, newest modification time in ns) of a recording's files."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    stats = [os.stat(p) for p in files]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
