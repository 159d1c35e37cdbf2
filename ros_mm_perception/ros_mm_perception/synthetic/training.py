"""The command line shared by the embedded models' training scripts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict


def training_main(description: str, train: Callable[..., Dict], out: Path, *, steps: int, batch_size: int,
                  lr: float, threads: int, argv=None) -> int:
    """Parse ``--seed --steps --batch-size --lr --threads --out`` (defaults given here), train, report."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--threads", type=int, default=threads, help="torch CPU threads (fixed for reproducibility)")
    p.add_argument("--out", type=Path, default=out, help="model folder to write")
    args = p.parse_args(argv)
    info = train(args.seed, args.steps, args.batch_size, args.lr, args.out, args.threads)
    print(f"saved {args.out} after {info['steps']} steps in {info['seconds']:.0f}s, "
          f"final loss {info['loss_curve'][-1]}")
    return 0
