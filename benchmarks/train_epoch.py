"""Seconds per training epoch of each posterior against `det` on the same data, and CLI start-up time.

Every recipe trains with its own settings (batch size, samples per step) on the same mnist5k training split,
one epoch at a time in rotating rounds (`--rounds`), so the machine's noise hits every recipe alike; the
figure is the best epoch of each. `robusthyper --help` start-up is the best of `--help-repeats` fresh
interpreters.

Usage:
    python benchmarks/train_epoch.py --json train_epoch.json            # det mcd bbb bhn bbh, 3 rounds
    python benchmarks/train_epoch.py --quick --json /tmp/t.json         # 512 images, det and mcd, 1 round
Ratios, not absolute times, are the figures to compare: the machine may be shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from robusthyper.config import load_recipe
from robusthyper.data import Dataset, Split, load_dataset
from robusthyper.files import write_atomic
from robusthyper.train import fit


def epoch_seconds(name: str, data: Dataset) -> float:
    """Wall seconds of one training epoch of recipe `name` (no validation split, no progress bar)."""
    recipe = load_recipe(name)
    spec = recipe.train.model_copy(update={"epochs": 1, "val_fraction": 0.0})
    result = fit(recipe.model_copy(update={"train": spec}), data, progress=False)
    return result.metrics["train_seconds"]


def help_seconds(repeats: int = 5) -> float:
    """Best wall seconds of `python -m robusthyper --help` in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                   os.environ.get("PYTHONPATH")])))  # fmt: skip
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "robusthyper", "--help"], check=True, capture_output=True, env=env
        )
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=None, help="default det mcd bbb bhn bbh")
    parser.add_argument(
        "--rounds", type=int, default=None, help="epochs per recipe, interleaved; the best counts (default 3)"
    )
    parser.add_argument("--n-train", type=int, default=None, help="first N training images (default all)")
    parser.add_argument("--help-repeats", type=int, default=None, help="default 5")
    parser.add_argument("--quick", action="store_true", help="512 images, det and mcd, 1 round: a smoke run")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    quick = {"recipes": ["det", "mcd"], "rounds": 1, "n_train": 512, "help_repeats": 1}
    full = {"recipes": ["det", "mcd", "bbb", "bhn", "bbh"], "rounds": 3, "n_train": None, "help_repeats": 5}
    for key, value in (quick if args.quick else full).items():  # explicit flags win over --quick
        if getattr(args, key) is None:
            setattr(args, key, value)

    data = load_dataset("mnist5k")
    if args.n_train:
        data = Dataset(info=data.info, train=Split(data.train.x[: args.n_train], data.train.y[: args.n_train]),
                       test=Split(data.test.x[:64], data.test.y[:64]), ood=None, source=data.source)  # fmt: skip
    warm = Dataset(info=data.info, train=Split(data.train.x[:128], data.train.y[:128]),
                   test=Split(data.test.x[:32], data.test.y[:32]), ood=None, source=data.source)  # fmt: skip
    for (
        name
    ) in args.recipes:  # one-time costs (lazy imports, allocator and thread-pool warm-up) count nowhere
        epoch_seconds(name, warm)
    times: dict[str, list[float]] = {name: [] for name in args.recipes}
    for r in range(args.rounds):
        order = args.recipes[r % len(args.recipes) :] + args.recipes[: r % len(args.recipes)]
        for name in order:
            times[name].append(epoch_seconds(name, data))
    best = {name: min(t) for name, t in times.items()}
    base = best.get("det") or next(iter(best.values()))
    startup = help_seconds(args.help_repeats)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, mnist5k train split ({len(data.train)} "
          f"images), best of {args.rounds} interleaved epochs")  # fmt: skip
    samples = {name: load_recipe(name).train.train_samples for name in args.recipes}
    print(f"{'recipe':8} {'s/epoch':>8} {'x det':>6} {'samples/step':>13} {'x det per sample':>17}")
    for name, secs in best.items():
        print(
            f"{name:8} {secs:8.2f} {secs / base:6.2f} {samples[name]:13d} {secs / base / samples[name]:17.2f}"
        )
    print(f"robusthyper --help: {startup:.3f} s (best of {args.help_repeats})")
    out = {
        "benchmark": "train_epoch",
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },  # fmt: skip
        "train_images": len(data.train),
        "epoch_seconds": best,
        "epoch_seconds_all": times,
        "ratio_to_det": {name: secs / base for name, secs in best.items()},
        "train_samples": samples,  # posterior samples per training step (bbh's recipe: 2)
        "help_seconds": startup,
    }
    if args.json:
        write_atomic(args.json, json.dumps(out, indent=2).encode())
    return out


if __name__ == "__main__":
    main()
