"""Seconds per training epoch of each posterior against `det`, measured in the same run, and CLI start-up.

Usage: python benchmarks/train_epoch.py [--epochs 2] [--recipes det mcd bbb] [--json out.json]
Ratios, not absolute times, are the figures to compare: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from robusthyper.config import load_recipe
from robusthyper.data import load_dataset
from robusthyper.train import fit


def epoch_seconds(name: str, data, epochs: int) -> float:
    recipe = load_recipe(name)
    spec = recipe.train.model_copy(update={"epochs": epochs, "val_fraction": 0.0})
    result = fit(recipe.model_copy(update={"train": spec}), data, progress=False)
    return result.metrics["train_seconds"] / epochs


def help_seconds(repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "robusthyper", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--recipes", nargs="+", default=["det", "mcd", "bbb"])
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    data = load_dataset("mnist5k")
    rows = {name: epoch_seconds(name, data, args.epochs) for name in args.recipes}
    base = rows.get("det") or next(iter(rows.values()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, mnist5k train split")
    print(f"{'recipe':8} {'s/epoch':>8} {'x det':>6}")
    for name, secs in rows.items():
        print(f"{name:8} {secs:8.2f} {secs / base:6.2f}")
    startup = help_seconds()
    print(f"robusthyper --help: {startup:.3f} s (best of 5)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"epoch_seconds": rows, "help_seconds": startup}, fh, indent=2)


if __name__ == "__main__":
    main()
