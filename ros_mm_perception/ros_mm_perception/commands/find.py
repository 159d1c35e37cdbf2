"""``ros-mm-perception find FILE [PHRASE]``: ask an object memory where things are.

The phrase is matched against the phrases the memory's objects were detected as and, through the
CLIP model that made their crop embeddings (recorded in the file), against what they looked like,
so a phrase that was never detected still finds objects (see :mod:`~.core.memory.objects`). Without
a phrase every object is listed. ``--json`` prints a list of objects with ``id``, ``phrase``,
``match``, ``position``, ``frame``, ``size``, ``first_seen_ns``, ``last_seen_ns``,
``observations``, ``confidence`` and ``state``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ros_mm_perception.core.errors import UserError

STATE_CHOICES = ("present", "gone", "any")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "find", help="ask an object memory where objects are, by phrase",
        description="Find objects in an object memory file (made by bag --memory or the node's "
                    "memory_path) by phrase, place, confidence and age.")
    p.add_argument("memory", metavar="FILE", help="object memory file (SQLite)")
    p.add_argument("phrase", nargs="?",
                   help="what to find, e.g. \"red mug\" (default: list every object)")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.add_argument("--max", type=int, default=10, metavar="N",
                   help="most objects to list (default: 10)")
    p.add_argument("--min-confidence", type=float, default=0.0, metavar="C",
                   help="least confidence in [0, 1] (default: 0)")
    p.add_argument("--min-match", type=float, default=None, metavar="M",
                   help="least match score in [0, 1] (default: the memory's threshold, 0.5)")
    p.add_argument("--max-age", type=float, default=None, metavar="S",
                   help="seen at most S seconds before the memory's newest observation")
    p.add_argument("--near", metavar="X,Y,Z", help="a point in the memory's frame (metres)")
    p.add_argument("--radius", type=float, default=None, metavar="R",
                   help="with --near: only objects within R metres")
    p.add_argument("--state", choices=STATE_CHOICES, default="present",
                   help="present, gone or any (default: present)")
    p.add_argument("--phrase-only", action="store_true",
                   help="match detected phrases only (does not load the CLIP model)")
    p.set_defaults(func=run)


def parse_point(text: str):
    try:
        point = [float(v) for v in text.split(",")]
    except ValueError:
        point = []
    if len(point) != 3:
        raise UserError(f"--near must be three numbers X,Y,Z, got {text!r}")
    return point


def run(args) -> int:
    from ros_mm_perception.core.memory.objects import GONE, MATCH_THRESHOLD, PRESENT, ObjectMemory

    path = Path(args.memory)
    if path.is_dir():
        raise UserError(f"object memory {str(path)!r} is a folder; give the memory's file")
    if not path.is_file():
        raise UserError(f"object memory {str(path)!r} does not exist")
    near = parse_point(args.near) if args.near is not None else None
    memory = ObjectMemory.open_existing(str(path))
    try:
        encode, scale = None, 100.0
        if args.phrase is not None and not args.phrase_only and memory.embedding_model:
            from ros_mm_perception.core.memory.text import load_text_encoder

            encode, scale = load_text_encoder(memory.embedding_model)
        states = {"present": (PRESENT,), "gone": (GONE,), "any": (PRESENT, GONE)}[args.state]
        matches = memory.query(
            args.phrase, encode_text=encode, logit_scale=scale, near=near, radius=args.radius,
            min_confidence=args.min_confidence, max_age_s=args.max_age, states=states,
            max_results=args.max,
            min_match=MATCH_THRESHOLD if args.min_match is None else args.min_match)
        found = [m.as_json(memory.frame) for m in matches]
    finally:
        memory.close()
    if args.json:
        print(json.dumps(found, allow_nan=False))
        return 0
    if not found:
        print(f"nothing in {path} matches" + (f" {args.phrase!r}" if args.phrase else ""))
    for obj in found:
        x, y, z = obj["position"]
        print(f"#{obj['id']} {obj['phrase']}  match {obj['match']:.2f}  "
              f"at ({x:.2f}, {y:.2f}, {z:.2f}) in {obj['frame']}  {obj['state']}  "
              f"confidence {obj['confidence']:.2f}  {obj['observations']} observations  "
              f"last seen at {obj['last_seen_ns'] / 1e9:.3f} s")
    return 0
