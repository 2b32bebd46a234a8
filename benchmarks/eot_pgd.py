"""EOT-PGD throughput per posterior: robusthyper against torchattacks' EOTPGD and a plain ART loop, same run.

For every model, every method attacks the same images (Linf PGD, same eps, step, steps, random start, K
samples per step, batch) and is timed batch by batch in rotating order, so the machine's noise hits all
methods alike and the ratios hold even on a busy machine. Methods:

- `rh-bma`: robusthyper's PGD (`build_attack`, ART's `ProjectedGradientDescentPyTorch` on the
  `StochasticEnsemble`), default EOT: CE of the log-mean softmax over K samples. Parameters frozen.
- `rh-mean-loss`: the same with `eot = mean-loss` (mean of per-sample CE): like-for-like with torchattacks.
- `torchattacks`: `torchattacks.EOTPGD(model, eps, alpha, steps, eot_iter=K, random_start=True)` around an
  `nn.Module` whose forward draws ONE fresh posterior sample and returns its logits (how a torchattacks user
  wraps a stochastic model): K separate forward/backward passes per step, mean of per-sample losses.
- `art-loop`: ART's `ProjectedGradientDescent` on a plain `PyTorchClassifier` around a module whose forward is
  a Python loop over K one-sample evaluations, log-mean softmax (the naive BMA); parameters left trainable,
  as a plain user would have them (ART's `loss_gradient` then also computes weight gradients).

Throughput is image·step·sample/s = n · steps · K / seconds (K = 1 for a point estimate). Robust accuracy of
every method's adversarial examples is measured the same way: BMA over `--k-eval` samples from one seed.
Effective GFLOP/s = FLOPs of the plain computation (one sample's forward and backward to the input, counted by
`torch.utils.flop_counter.FlopCounterMode`) per image·step·sample × throughput, against this machine's fp32
matmul peak measured in the same run (best of before and after).

Usage:
    python benchmarks/eot_pgd.py --store /tmp/bench-models --json eot_pgd.json              # the full figures
    python benchmarks/eot_pgd.py --quick --json /tmp/q.json                                  # a minute's smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robusthyper.data import load_dataset
from robusthyper.ensemble import StochasticEnsemble
from robusthyper.files import write_atomic
from robusthyper.nets import frozen
from robusthyper.posteriors.base import Posterior

METHODS = ("rh-bma", "rh-mean-loss", "torchattacks", "art-loop")
PEER = "torchattacks"
CPU = torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(size: int = 2048, repeats: int = 5, device: torch.device = CPU) -> float:
    """Best fp32 GFLOP/s of `torch.mm` on `size`² matrices (all of torch's threads, or the GPU)."""
    if device.type == "cuda":
        size = 8192
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 peak, not TF32
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


class OneSample(nn.Module):
    """A posterior as torchattacks users wrap it: each forward draws one fresh sample, returns logits `[B, C]`."""

    def __init__(self, posterior: Posterior, generator: torch.Generator) -> None:
        super().__init__()
        self.posterior = posterior
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return self.posterior.logits(x, 1, self.generator)[0]


class LoopEnsemble(nn.Module):
    """The naive BMA: a Python loop over K one-sample evaluations, log of the mean softmax `[B, C]`."""

    def __init__(self, posterior: Posterior, k: int, generator: torch.Generator) -> None:
        super().__init__()
        self.posterior = posterior
        self.k = k
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        logp = [F.log_softmax(self.posterior.logits(x, 1, self.generator)[0], -1) for _ in range(self.k)]
        return torch.logsumexp(torch.stack(logp), 0) - np.log(self.k)


def plain_flops_per_sample_step(posterior: Posterior, x: Tensor, y: Tensor) -> float:
    """FLOPs of one image, one step, one sample, computed plainly (full net, forward + backward to x)."""
    from torch.utils.flop_counter import FlopCounterMode

    xg = x.clone().requires_grad_(True)
    counter = FlopCounterMode(display=False)
    with frozen(posterior), counter:  # backward() (autograd.grad trips FlopCounterMode's hooks)
        F.cross_entropy(posterior.logits(xg, 1, torch.Generator(x.device).manual_seed(0))[0], y).backward()
    return counter.get_total_flops() / x.shape[0]


def art_projection_overhead(
    batch: int,
    shape: tuple[int, ...],
    eps: float,
    repeats: int = 30,
    device: torch.device = CPU,
) -> dict[str, float]:
    """Seconds per step of ART's Linf projection (it rebuilds an input-sized eps array with numpy and copies it
    to a tensor every step) against the same projection as one `clamp`, on a batch of the attack's size."""
    from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch import (
        ProjectedGradientDescentPyTorch,
    )

    values = torch.rand(batch, *shape, device=device) * 0.4 - 0.2
    out = {}
    for name, fn in (
        ("art_projection_s", lambda: ProjectedGradientDescentPyTorch._projection(values, eps, "inf")),
        ("clamp_s", lambda: values.clamp(-eps, eps)),
    ):
        fn()
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        _sync(device)
        out[name] = (time.perf_counter() - start) / repeats
    assert torch.equal(
        ProjectedGradientDescentPyTorch._projection(values, eps, "inf"), values.clamp(-eps, eps)
    )
    return out


def robust_accuracy(posterior: Posterior, x_adv: Tensor, y: Tensor, k_eval: int, seed: int) -> float:
    ens = StochasticEnsemble(posterior, k_eval, torch.Generator(x_adv.device).manual_seed(seed))
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x_adv), 256):
            correct += int((ens(x_adv[i : i + 256]).argmax(1) == y[i : i + 256]).sum())
    return correct / len(x_adv)


class Runner:
    """Builds each method's attack once per model; `run(method, x, y)` attacks one batch."""

    def __init__(self, posterior: Posterior, k: int, eps: float, alpha: float, steps: int, batch: int,
                 shape: tuple[int, ...], classes: int, seed: int, max_rows_grad: int | None = None) -> None:  # fmt: skip
        from robusthyper.attacks import build_attack, make_spec

        self.posterior, self.k, self.seed = posterior, k, seed
        self.attacks: dict[str, Any] = {}
        for method, eot in (("rh-bma", "bma"), ("rh-mean-loss", "mean-loss")):
            spec = make_spec(
                attack="pgd", eps=eps, step_size=alpha, steps=steps, eot=eot, k_attack=k, seed=seed
            )
            self.attacks[method] = build_attack(posterior, spec, shape, classes, batch_size=batch)
            if max_rows_grad:
                self.attacks[method].ensemble.max_rows_grad = max_rows_grad
        import torchattacks

        device = self.device = posterior.device
        one = OneSample(posterior, torch.Generator(device).manual_seed(seed))
        self.attacks["torchattacks"] = torchattacks.EOTPGD(
            one, eps=eps, alpha=alpha, steps=steps, eot_iter=k, random_start=True
        )
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        loop = LoopEnsemble(posterior, k, torch.Generator(device).manual_seed(seed))
        classifier = PyTorchClassifier(loop, nn.CrossEntropyLoss(), shape, classes, clip_values=(0.0, 1.0),
                                       device_type="gpu" if device.type == "cuda" else "cpu")  # fmt: skip
        self.attacks["art-loop"] = ProjectedGradientDescent(
            classifier, eps=eps, eps_step=alpha, max_iter=steps, num_random_init=1, batch_size=batch,
            verbose=False,
        )  # fmt: skip

    def run(self, method: str, x: Tensor, y: Tensor) -> Tensor:
        np.random.seed(self.seed)  # ART's random start
        torch.manual_seed(self.seed)  # torchattacks' random start
        attack = self.attacks[method]
        if method == "torchattacks":
            with frozen(self.posterior):  # input gradients only, as robusthyper's attacks
                return attack(x, y).detach()
        if method == "art-loop":  # a plain user's model: trainable parameters
            return torch.from_numpy(attack.generate(x.cpu().numpy(), y.cpu().numpy())).to(self.device)
        with frozen(self.posterior):
            return attack.generate(x, y)  # robusthyper's `Attack`: tensors in and out


def bench_model(name: str, posterior: Posterior, x: Tensor, y: Tensor, args: argparse.Namespace,
                methods: list[str]) -> dict[str, Any]:  # fmt: skip
    k = args.k if posterior.stochastic else 1
    alpha = args.alpha if args.alpha else args.eps / 4
    runner = Runner(posterior, k, args.eps, alpha, args.steps, args.batch, tuple(x.shape[1:]), 10, args.seed,
                    args.max_rows_grad)  # fmt: skip
    seconds = dict.fromkeys(methods, 0.0)
    advs: dict[str, list[Tensor]] = {m: [] for m in methods}
    for b, start in enumerate(range(0, len(x), args.batch)):
        xb, yb = x[start : start + args.batch], y[start : start + args.batch]
        order = methods[b % len(methods) :] + methods[: b % len(methods)]  # rotate: no method always first
        for method in order:
            _sync(x.device)
            t0 = time.perf_counter()
            advs[method].append(runner.run(method, xb, yb))
            _sync(x.device)
            seconds[method] += time.perf_counter() - t0
    flops = plain_flops_per_sample_step(posterior, x[: args.batch], y[: args.batch])
    work = len(x) * args.steps * k
    rows = {}
    for method in methods:
        adv = torch.cat(advs[method])
        assert (adv - x).abs().max() <= args.eps + 1e-5 and adv.min() >= 0 and adv.max() <= 1
        rate = work / seconds[method]
        rows[method] = {
            "seconds": seconds[method],
            "isps": rate,
            "gflops_effective": rate * flops / 1e9,
            "robust_accuracy": robust_accuracy(posterior, adv, y, args.k_eval, args.seed + 1),
        }
    steps_run = -(-len(x) // args.batch) * args.steps
    overhead = art_projection_overhead(args.batch, tuple(x.shape[1:]), args.eps, device=x.device)
    for key in ("rh-bma", "rh-mean-loss"):
        if key in rows:  # the share of robusthyper's attack time that ART's eps rebuilding costs
            overhead[f"art_projection_share_{key}"] = (
                overhead["art_projection_s"] * steps_run / rows[key]["seconds"]
            )
    return {"k": k, "alpha": alpha, "flops_per_image_step_sample": flops, "methods": rows,
            "art_step_overhead": overhead}  # fmt: skip


def load_models(
    names: list[str], store: str | None, device: torch.device
) -> dict[str, tuple[Posterior, str]]:
    from robusthyper import store as stores

    out = {}
    for name in names:
        try:
            ckpt = stores.load(name, store=store, device=device)
            out[name] = (ckpt.posterior, str(ckpt.path))
        except Exception as err:  # noqa: BLE001 - any missing checkpoint: fall back to an untrained model
            from robusthyper.config import load_recipe
            from robusthyper.data import dataset_info
            from robusthyper.posteriors import build_posterior

            print(
                f"# {name}: no checkpoint ({str(err).splitlines()[0]}); using an UNTRAINED model",
                file=sys.stderr,
            )
            torch.manual_seed(0)
            out[name] = (build_posterior(load_recipe(name), dataset_info("mnist5k")).to(device), "untrained")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["det", "mcd", "bbb", "bhn", "bbh"])
    parser.add_argument("--store", default=None, help="checkpoint store (default: robusthyper's ./models)")
    parser.add_argument("--n", type=int, default=1000, help="mnist5k test images")
    parser.add_argument("--k", type=int, default=20, help="posterior samples per step (EOT)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--alpha", type=float, default=None, help="step size (default eps/4, robusthyper's)")
    parser.add_argument("--batch", type=int, default=128, help="images per attack call, every method")
    parser.add_argument("--max-rows-grad", type=int, default=None,
                        help="robusthyper's K·b rows per gradient call (default: the library's)")  # fmt: skip
    parser.add_argument("--k-eval", type=int, default=100, help="samples for the robust accuracy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (a GPU is never required)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    parser.add_argument("--quick", action="store_true", help="n 64, steps 5, k 4, k-eval 8: a smoke run")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.steps, args.k, args.k_eval, args.batch = min(args.n, 64), 5, 4, 8, min(args.batch, 32)
    if args.threads:
        torch.set_num_threads(args.threads)

    import art
    import torchattacks

    data = load_dataset("mnist5k")
    device = torch.device(args.device)
    x, y = data.test.x[: args.n].contiguous().to(device), data.test.y[: args.n].to(device)
    load_start = os.getloadavg()
    peak_before = matmul_peak(device=device)
    models = load_models(args.models, args.store, device)
    results: dict[str, Any] = {}
    for name, (posterior, path) in models.items():
        results[name] = bench_model(name, posterior, x, y, args, list(args.methods)) | {"checkpoint": path}
        _print_model(name, results[name], max(peak_before, 1e-9))
    peak_after = matmul_peak(device=device)
    peak = max(peak_before, peak_after)
    for res in results.values():
        for row in res["methods"].values():
            row["fraction_of_peak"] = row["gflops_effective"] / peak
    out = {
        "benchmark": "eot_pgd",
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "loadavg_1_5_15_start": load_start,
            "loadavg_1_5_15_end": os.getloadavg(),
        },
        "versions": {
            "torch": torch.__version__,
            "art": art.__version__,
            "torchattacks": torchattacks.__version__,
        },
        "matmul_peak_gflops": {"before": peak_before, "after": peak_after, "used": peak},
        "results": results,
    }
    _print_table(out)
    if args.json:
        write_atomic(args.json, json.dumps(out, indent=2).encode())
    return out


def _print_model(name: str, res: dict[str, Any], peak: float) -> None:
    parts = [f"{m} {r['isps']:,.0f}/s acc {r['robust_accuracy']:.3f}" for m, r in res["methods"].items()]
    print(f"# {name} (K={res['k']}): " + "; ".join(parts), file=sys.stderr, flush=True)


def _print_table(out: dict[str, Any]) -> None:
    s = out["settings"]
    peak = out["matmul_peak_gflops"]
    print(
        f"EOT-PGD Linf eps={s['eps']} steps={s['steps']} K={s['k']} n={s['n']} batch={s['batch']} "
        f"k_eval={s['k_eval']}; torch {out['versions']['torch']}, {out['machine']['torch_threads']} threads; "
        f"matmul peak {peak['before']:.0f} / {peak['after']:.0f} GFLOP/s (before / after; used {peak['used']:.0f}); "
        f"load average {out['machine']['loadavg_1_5_15_start'][0]:.1f} -> {out['machine']['loadavg_1_5_15_end'][0]:.1f}"
    )
    header = f"{'model':6} {'method':13} {'seconds':>8} {'img·step·sample/s':>18} {'x peer':>7} "
    header += f"{'GFLOP/s':>8} {'% peak':>7} {'robust acc':>10} {'Δ peer pp':>9}"
    print(header)
    for name, res in out["results"].items():
        rows = res["methods"]
        peer = rows.get(PEER)
        for method, r in rows.items():
            ratio = f"{r['isps'] / peer['isps']:7.2f}" if peer else f"{'-':>7}"
            delta = f"{100 * (r['robust_accuracy'] - peer['robust_accuracy']):+9.1f}" if peer else f"{'-':>9}"
            print(
                f"{name:6} {method:13} {r['seconds']:8.1f} {r['isps']:18,.0f} {ratio} "
                f"{r['gflops_effective']:8.1f} {100 * r['fraction_of_peak']:6.1f}% "
                f"{r['robust_accuracy']:10.3f} {delta}"
            )
        o = res["art_step_overhead"]
        share = o.get("art_projection_share_rh-bma")
        print(
            f"{'':6} ART's Linf projection: {1e3 * o['art_projection_s']:.3f} ms/step vs clamp "
            f"{1e3 * o['clamp_s']:.3f} ms" + (f" ({100 * share:.2f}% of rh-bma's time)" if share else "")
        )


if __name__ == "__main__":
    main()
