"""What the embedded models' training scripts share: the command line and batches rendered
ahead."""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, Tuple

import numpy as np

TRAINING_INFO = "training.json"
"""The file in a model folder that records how the model was trained."""
PREFETCH = 3
"""Batches rendered ahead by the data process while the model trains on the current one."""
_make_batch: list = []


def _start_renderer(setup: Callable, args: Tuple) -> None:
    import torch

    torch.set_num_threads(1)
    _make_batch.append(setup(*args))


def _render(seed: int, step: int):
    return _make_batch[0](np.random.default_rng([seed, step]))


def prefetched_batches(setup: Callable, args: Tuple, seed: int, steps: int) -> Iterator:
    """``make(rng)`` for steps ``0 .. steps-1`` in order, where ``make = setup(*args)`` and the rng
    of step ``k`` is ``default_rng([seed, k])``: one spawned process renders :data:`PREFETCH` steps
    ahead.

    A batch depends on the seed and its step only, so the run stays deterministic. ``setup`` must
    be a module-level function (the process imports it by name).
    """
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, initializer=_start_renderer, initargs=(setup, args)) as pool:
        pending = [pool.apply_async(_render, (seed, k)) for k in range(min(PREFETCH, steps))]
        for step in range(steps):
            batch = pending.pop(0).get()
            if step + PREFETCH < steps:
                pending.append(pool.apply_async(_render, (seed, step + PREFETCH)))
            yield batch


def adamw_cosine(decay, rest, lr: float, steps: int, eps: float = 1e-8):
    """AdamW with weight decay 0.05 on ``decay`` only, a linear warm-up over the first 5 % of the
    steps, then a cosine decay to 0: ``(optimizer, scheduler)``."""
    import torch

    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=eps)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(k / steps, 1.0))))
    return opt, sched


def optimise(model, batches: Iterator, losses: Callable, opt, sched, steps: int, started: float,
             log_every: int = 25) -> list:
    """Train ``model`` on ``steps`` batches, ``losses(batch)`` giving named loss terms with
    ``total``; gradients clipped to norm 1; a log line every ``log_every`` steps. Returns the
    loss curve."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    curve = []
    model.train()
    for step, batch in enumerate(batches):
        parts = losses(batch)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        curve.append(round(parts["total"].item(), 5))
        if step % log_every == 0 or step == steps - 1:
            detail = "  ".join(f"{k} {v.item():.3f}" for k, v in parts.items())
            print(f"step {step:5d}  {detail}  {time.time() - started:7.1f}s", flush=True)
    model.eval()
    return curve


def write_training_info(out: Path, *, seed: int, steps: int, batch_size: int, lr: float,
                        threads: int, started: float, loss_curve, **details) -> Dict:
    """Record a finished run in ``out/training.json`` (settings, ``details``, seconds since
    ``started``, torch version, loss curve) and return the record."""
    import torch

    info = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "threads": threads,
            **details, "seconds": round(time.time() - started, 1), "torch": torch.__version__,
            "loss_curve": list(loss_curve)}
    (Path(out) / TRAINING_INFO).write_text(json.dumps(info, indent=1))
    return info


def training_main(description: str, train: Callable[..., Dict], out: Path, *, steps: int,
                  batch_size: int, lr: float, threads: int, continuable: bool = False,
                  argv=None) -> int:
    """Parse ``--seed --steps --batch-size --lr --threads --out`` (defaults given here), and
    ``--init-from`` (passed to ``train`` as ``init_from``) when ``continuable``; train, report."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--threads", type=int, default=threads,
                   help="torch CPU threads (fixed for reproducibility)")
    p.add_argument("--out", type=Path, default=out, help="model folder to write")
    if continuable:
        p.add_argument("--init-from", type=Path,
                       help="model folder whose weights the run starts from (default: random)")
    args = p.parse_args(argv)
    extra = {"init_from": args.init_from} if continuable else {}
    info = train(args.seed, args.steps, args.batch_size, args.lr, args.out, args.threads, **extra)
    print(f"saved {args.out} after {info['steps']} steps in {info['seconds']:.0f}s, "
          f"final loss {info['loss_curve'][-1]}")
    return 0
