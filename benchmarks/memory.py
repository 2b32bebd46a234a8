"""Peak memory of an EOT-PGD attack (and of a K-sample evaluation) as K grows: chunking keeps it bounded.

Each measurement runs in its own subprocess, so every peak is clean: the child builds the model, records its
resident set size (RSS), runs `--steps` steps of robusthyper's PGD-EOT (`build_attack`, K_attack = K) on
`--batch` mnist5k test images, or evaluates the ensemble with K samples on them (`--phase eval`), and reports
its peak RSS (`getrusage`, max RSS of the process) and, on a GPU, `torch.cuda.max_memory_allocated`. Runs with
the default chunk sizes (`StochasticEnsemble.max_rows_grad`, `max_rows_backward` / `max_rows`) and, up to
`--unchunked-max-k`, with chunking off (one graph and one backward pass over the batch), to show what it
saves. Models are freshly initialised from their recipes: memory does not depend on training.

Usage:
    python benchmarks/memory.py --json memory.json                         # mcd, bbb, bhn; K 1 .. 200
    python benchmarks/memory.py --models bbb --ks 1 10 100 --phase eval
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

UNCHUNKED = 10**9


def child(args: argparse.Namespace) -> None:
    import torch

    from robusthyper.attacks import build_attack, make_spec
    from robusthyper.config import load_recipe
    from robusthyper.data import load_dataset
    from robusthyper.ensemble import DEFAULT_MAX_ROWS, DEFAULT_MAX_ROWS_GRAD, StochasticEnsemble
    from robusthyper.nets import frozen
    from robusthyper.posteriors import build_posterior

    device = torch.device(args.device)
    data = load_dataset("mnist5k")
    torch.manual_seed(0)
    posterior = build_posterior(load_recipe(args.model), data.info).to(device)
    x, y = data.test.x[: args.batch].to(device), data.test.y[: args.batch].to(device)
    import art.attacks.evasion  # noqa: F401 - imported before the baseline: its import is not the attack's memory
    import art.estimators.classification  # noqa: F401

    rows = (
        UNCHUNKED
        if args.unchunked
        else (DEFAULT_MAX_ROWS_GRAD if args.phase == "attack" else DEFAULT_MAX_ROWS)
    )
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_cuda = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    with frozen(posterior):
        if args.phase == "attack":
            spec = make_spec(attack="pgd", eps=0.1, steps=args.steps, k_attack=args.k)
            attack = build_attack(posterior, spec, tuple(x.shape[1:]), 10, batch_size=args.batch)
            attack.ensemble.max_rows_grad = rows
            if args.unchunked:  # one graph, one backward pass over the whole batch
                attack.ensemble.max_rows_backward = UNCHUNKED
            attack.generate(x, y)
        else:
            ens = StochasticEnsemble(posterior, args.k, max_rows=rows)
            with torch.no_grad():
                ens(x)
    out: dict[str, Any] = {
        "seconds": time.perf_counter() - start,
        "baseline_rss_mb": base_kb / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows_per_call": None if args.unchunked else rows,
    }
    if device.type == "cuda":
        out["cuda_peak_mb"] = (torch.cuda.max_memory_allocated(device) - base_cuda) / 2**20
    print(json.dumps(out))


def measure(model: str, k: int, phase: str, unchunked: bool, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--model", model, "--k", str(k), "--phase", phase,
           "--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device]  # fmt: skip
    if unchunked:
        cmd.append("--unchunked")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                   os.environ.get("PYTHONPATH")])))  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mcd", "bbb", "bhn"])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 10, 20, 50, 100, 200])
    parser.add_argument("--phase", nargs="+", default=["attack", "eval"], choices=["attack", "eval"])
    parser.add_argument("--batch", type=int, default=128, help="images attacked / evaluated at once")
    parser.add_argument("--steps", type=int, default=2, help="PGD steps (the peak is reached in the first)")
    parser.add_argument(
        "--unchunked-max-k", type=int, default=50, help="largest K also run with chunking off"
    )
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--quick", action="store_true", help="K 1 and 8, mcd only, one step: a smoke run")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--unchunked", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.phase = args.phase[0] if isinstance(args.phase, list) else args.phase
        child(args)
        return {}
    if args.quick:
        args.models, args.ks, args.steps, args.batch, args.unchunked_max_k = ["mcd"], [1, 8], 1, 16, 8

    rows = []
    for phase in args.phase:
        for model in args.models:
            for k in args.ks:
                for unchunked in (False, True):
                    if unchunked and k > args.unchunked_max_k:
                        continue
                    res = measure(model, k, phase, unchunked, args)
                    rows.append({"phase": phase, "model": model, "k": k, "chunked": not unchunked, **res})
                    _print_row(rows[-1])
    out = {
        "benchmark": "memory",
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("json", "child", "model", "k", "unchunked")
        },
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "rows": rows,
    }
    if args.json:
        from robusthyper.files import write_atomic

        write_atomic(args.json, json.dumps(out, indent=2).encode())
    return out


def _print_row(row: dict[str, Any]) -> None:
    if "error" in row:
        print(
            f"{row['phase']:6} {row['model']:4} K={row['k']:<4} chunked={row['chunked']!s:5} ERROR {row['error']}"
        )
        return
    extra = f" cuda peak {row['cuda_peak_mb']:8.1f} MB" if "cuda_peak_mb" in row else ""
    print(
        f"{row['phase']:6} {row['model']:4} K={row['k']:<4} chunked={row['chunked']!s:5} "
        f"peak RSS {row['peak_rss_mb']:8.1f} MB (+{row['peak_rss_mb'] - row['baseline_rss_mb']:7.1f} over the "
        f"loaded model){extra}  {row['seconds']:6.1f} s",
        flush=True,
    )


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


if __name__ == "__main__":
    main()
