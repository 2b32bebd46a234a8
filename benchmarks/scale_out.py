"""Cells per minute on one and on two single-thread Ray workers, and the Ray path's cost per cell.

One run, on a Ray cluster of this test run's own on 127.0.0.1 (`ray.cluster_utils.Cluster`: a head with one
CPU, then a second one-CPU node added; dashboard and usage stats off): the same plan of cells (untrained tiny
MLPs `det` and `mcd` under PGD at several eps, plus their gradient probes) is evaluated in this process with
one torch thread (`LocalExecutor`), on Ray with one worker, and on Ray with two, in rotating rounds; the
figure is each setting's best round. Every Ray round reuses one driver connection and its warm worker
processes; the first Ray run (worker start-up, imports, the workload's first fetch) is reported apart.

Overhead per cell = (wall seconds on one Ray worker - wall seconds in process) / cells: what shipping a cell,
its record and the scheduling cost on top of the same computation.

Usage:
    python benchmarks/scale_out.py --json scale_out.json     # 2 models x 6 attacks (+ probes), n 256, 2 rounds
    python benchmarks/scale_out.py --quick                   # a few seconds of cells
Needs robusthyper[ray]. Ratios, not absolute times, are the figures to compare: the machine may be noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

from robusthyper.pipeline.ray_executor import LOOPBACK, loopback_env

loopback_env()  # before Ray is imported: every process on 127.0.0.1

import torch  # noqa: E402

from robusthyper import pipeline  # noqa: E402
from robusthyper.attacks import make_spec  # noqa: E402
from robusthyper.config import parse_recipe  # noqa: E402
from robusthyper.data import dataset_info, load_dataset  # noqa: E402
from robusthyper.files import write_atomic  # noqa: E402
from robusthyper.loading import ModelUnderTest  # noqa: E402
from robusthyper.pipeline.executors import LocalExecutor  # noqa: E402
from robusthyper.pipeline.ray_executor import RayExecutor  # noqa: E402
from robusthyper.posteriors import build_posterior  # noqa: E402


def tiny(kind: str) -> ModelUnderTest:
    table = {"dataset": "mnist5k", "seed": 0, "net": {"arch": "mlp", "widths": [64]}, "posterior": {"kind": kind},
             "train": {"epochs": 1}}  # fmt: skip
    torch.manual_seed(0)
    return ModelUnderTest(kind, build_posterior(parse_recipe(table, "<bench>", kind), dataset_info("mnist5k")),
                          kind=kind)  # fmt: skip


def timed(models, specs, split, n: int, batch: int, executor) -> tuple[float, pipeline.Evaluated]:
    start = time.perf_counter()
    done = pipeline.evaluate(models, specs, split, dataset="mnist5k", n=n, batch_size=batch, progress=False,
                             executor=executor)  # fmt: skip
    return time.perf_counter() - start, done


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="test examples per cell (default 256)")
    parser.add_argument("--steps", type=int, default=None, help="PGD steps (default 10)")
    parser.add_argument("--eps", type=float, nargs="+", default=None, help="default 0.02 .. 0.3, six values")
    parser.add_argument("--rounds", type=int, default=None, help="rotating rounds; the best counts (default 2)")
    parser.add_argument("--quick", action="store_true", help="n 32, 2 steps, 2 eps, 1 round")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    n = args.n or (32 if args.quick else 256)
    steps = args.steps or (2 if args.quick else 10)
    eps = args.eps or ([0.05, 0.1] if args.quick else [0.02, 0.05, 0.1, 0.15, 0.2, 0.3])
    rounds = args.rounds or (1 if args.quick else 2)
    batch = 64

    import ray
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    torch.set_num_threads(1)  # in-process cells on one thread, as each single-CPU Ray task
    models = [tiny("det"), tiny("mcd")]
    specs = [make_spec(attack="pgd", eps=e, steps=steps, k_attack=4, k_eval=8) for e in eps]
    split = load_dataset("mnist5k").test
    cluster = Cluster(shutdown_at_exit=True)
    best: dict[str, float] = {}
    try:
        cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK, include_dashboard=False)
        ray.init(address=cluster.address, log_to_driver=False)  # kept for every round: warm workers
        executor = RayExecutor(cluster.address)
        first, _ = timed(models, specs, split, n, batch, executor)
        cells = 0
        compute: dict[str, float] = {}
        for workers in (1, 2):
            if workers == 2:
                cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK, include_dashboard=False)
                cluster.wait_for_nodes(timeout=60)
            for _ in range(rounds):
                for name, runner in (("in-process", LocalExecutor()), (f"ray-{workers}", executor)):
                    seconds, done = timed(models, specs, split, n, batch, runner)
                    cells = len(done.plan)
                    if seconds < best.get(name, float("inf")):
                        best[name] = seconds
                        compute[name] = sum(c.seconds for c in done.cells)
        ray.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    per_minute = {name: cells / seconds * 60 for name, seconds in best.items()}
    overhead = (best["ray-1"] - best["in-process"]) / cells
    out = {
        "cells": cells, "best_seconds": best, "cells_per_minute": per_minute,
        "cell_compute_seconds": compute, "ray_overhead_per_cell_s": overhead,
        "speedup_2_vs_1_workers": best["ray-1"] / best["ray-2"], "first_ray_run_seconds": first,
        "settings": {"n": n, "steps": steps, "eps": eps, "rounds": rounds, "batch": batch, "k_attack": 4,
                     "k_eval": 8, "models": ["det", "mcd"]},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "ray": ray.__version__},
    }  # fmt: skip
    print(f"{cells} cells (2 models x {len(eps)} PGD-{steps} cells + probes, n={n}); best of {rounds} round(s)")
    print(f"{'setting':<12} {'seconds':>8} {'cells/min':>10} {'in cells':>9}")
    for name in ("in-process", "ray-1", "ray-2"):
        print(f"{name:<12} {best[name]:8.2f} {per_minute[name]:10.1f} {compute[name]:9.2f}")
    print(f"two workers vs one: {out['speedup_2_vs_1_workers']:.2f}x; Ray overhead per cell (one worker vs "
          f"in process): {overhead * 1000:.0f} ms; first Ray run (cold workers): {first:.1f} s")  # fmt: skip
    if args.json:
        write_atomic(args.json, json.dumps(out, indent=2).encode())
    return out


if __name__ == "__main__":
    main()
