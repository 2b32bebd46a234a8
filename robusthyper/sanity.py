"""Sanity flags: signs, read off a tidy results table, that a model only *looks* robust (METHODS.md §4;
Athalye, Carlini, Wagner 2018; Carlini et al. 2019, "On evaluating adversarial robustness").

`flags(results)` is a pure function of `robusthyper.evaluate`'s results table (one row per model, attack,
eps, input, metric) and returns `Flag`s, each naming the model, attack and eps, what is wrong and what to do:

| code | when |
|---|---|
| `non-monotone` | robust accuracy rises with eps for the same attack settings |
| `not-near-zero` | an iterative gradient attack leaves accuracy well above 0 at a large eps (>= `large_eps`) |
| `iterative-weaker-than-fgsm` | an iterative attack (PGD, APGD) leaves more accuracy than a single step (FGSM) |
| `square-stronger` | a gradient-free attack (Square) beats every gradient attack at that eps (masked gradients) |
| `eot-not-converged` | robust accuracy still falls when K_attack doubles (rows differing only in k_attack) |
| `zero-gradients`, `nonfinite-gradients` | from `grad_*_fraction` rows that `gradient_health` provides |

Differences are judged against sampling noise: two accuracies over n examples differ "beyond noise" when the
gap exceeds `z` binomial standard errors, sqrt(p(1-p)/n) per accuracy (combined in quadrature), and at least
`min_gap`. The papers' protocols and the `worst-case` rows are not checked: they are weak or combined by design.
`flags_to_frame` turns the flags into a table to store beside the results or gate on.

Which attack is which comes from the registry's traits (`robusthyper.attacks.Trait`), read at call time, so a
family registered later is checked like the built-in ones: a row's family is its `family` column where the table
has one, else `robusthyper.attacks.family_of_label(attack)`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd
import torch

from robusthyper.attacks import Trait, families_with, family_of_label
from robusthyper.run.schema import FLAG_COLUMNS, GRADIENT_CHECK, GRADIENT_METRICS

CURVE_KEYS = ("model", "attack", "norm", "eot", "k_attack", "k_eval", "seed", "restarts")
"""Rows that differ only in eps form one robustness curve."""


class Severity(str, Enum):
    ERROR = "error"
    """The numbers cannot be trusted as they are."""
    WARNING = "warning"
    """Likely a weak attack; check before quoting."""


@dataclass(frozen=True)
class Flag:
    """One sanity finding: what is wrong where, and what to do."""

    code: str
    severity: Severity
    model: str
    attack: str
    eps: float
    message: str

    def __str__(self) -> str:
        return f"[{self.severity.value}] {self.code}: {self.model} {self.attack} eps={self.eps:g}: {self.message}"


@dataclass(frozen=True)
class Tolerance:
    """How far numbers may stray before a flag is raised."""

    z: float = 2.0
    """Binomial standard errors a difference must exceed."""
    min_gap: float = 0.02
    """Smallest accuracy difference ever flagged (absorbs K_eval sampling noise)."""
    large_eps: float = 0.3
    """Eps from which a correct attack should bring accuracy near 0 (MNIST Linf: 0.3; CIFAR: use more)."""
    near_zero: float = 0.05
    """Accuracy that counts as 'near 0' at `large_eps` (plus noise)."""
    eot_drop: float = 0.02
    """Largest fall in robust accuracy allowed when K_attack doubles (plus noise)."""
    grad_zero_fraction: float = 0.5
    """Share of exactly-zero input-gradient entries above which gradients count as masked."""


@dataclass(frozen=True)
class Families:
    """The registered families as the checks group them (`families()`)."""

    single_step: frozenset[str]
    """Single steps (FGSM): the baseline an iterative attack must beat."""
    iterative: frozenset[str]
    """Iterative gradient attacks on the classification loss alone; detection-aware ones (`pgd-adaptive`) are
    left out: they trade misclassification for a low detection score, so may legitimately leave more accuracy."""
    gradient_free: frozenset[str]
    """Gradient-free attacks (Square): a check against masked gradients."""
    paper: frozenset[str]
    """The papers' own weak protocols: never checked."""


def families() -> Families:
    """The registry's families by trait, now (a family registered later is included)."""
    return Families(
        single_step=frozenset(families_with(Trait.SINGLE_STEP, without=(Trait.PAPER_PROTOCOL,))),
        iterative=frozenset(
            families_with(Trait.ITERATIVE, without=(Trait.DETECTION_AWARE, Trait.PAPER_PROTOCOL))
        ),
        gradient_free=frozenset(families_with(Trait.GRADIENT_FREE)),
        paper=frozenset(families_with(Trait.PAPER_PROTOCOL)),
    )


def _se(p: float, n: float) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n and n > 0 else 0.0


def _beyond_noise(high: float, low: float, n: float, tol: Tolerance, floor: float | None = None) -> bool:
    """high - low exceeds z combined standard errors and the floor (default `min_gap`)."""
    gap = max(tol.z * math.hypot(_se(high, n), _se(low, n)), tol.min_gap if floor is None else floor)
    return high - low > gap


def robust_accuracy(results: pd.DataFrame) -> pd.DataFrame:
    """Adversarial-accuracy rows of `results`, one per (model, attack, eps, settings), with column `acc`."""
    if results.empty or "metric" not in results:
        return pd.DataFrame()
    rows = results[(results["metric"] == "accuracy") & (results["input"] == "adversarial")].copy()
    rows = rows.rename(columns={"value": "acc"})
    by_label = rows["attack"].map(family_of_label)
    rows["family"] = rows["family"].where(rows["family"].notna(), by_label) if "family" in rows else by_label
    if "n" not in rows:
        rows["n"] = np.nan
    return rows


def flags(
    results: pd.DataFrame, examples: pd.DataFrame | None = None, *, tolerance: Tolerance | None = None
) -> list[Flag]:
    """Every sanity flag the results raise (see the module docstring); an empty list is a clean bill.

    `examples` (an evaluation's per-example table) is optional: when given, n is taken from it for rows whose
    results lack an `n` column.
    """
    tol = tolerance or Tolerance()
    kinds = families()
    acc = robust_accuracy(results)
    found: list[Flag] = []
    if not acc.empty:
        if acc["n"].isna().any() and examples is not None and not examples.empty:
            counts = examples.groupby(["model", "attack", "eps"]).size().rename("n_ex").reset_index()
            acc = acc.merge(counts, on=["model", "attack", "eps"], how="left")
            acc["n"] = acc["n"].fillna(acc["n_ex"])
        checked = acc[~acc["family"].isin(kinds.paper) & (acc["attack"] != "worst-case")]
        found += _non_monotone(checked, tol)
        found += _not_near_zero(checked, kinds, tol)
        found += _iterative_vs_fgsm(_largest_k(checked), kinds, tol)
        found += _square_stronger(_largest_k(checked), kinds, tol)
        found += _eot_not_converged(checked, tol)
    found += _gradient_flags(results, tol)
    return found


def _keys(frame: pd.DataFrame, keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if k in frame.columns]


def _non_monotone(acc: pd.DataFrame, tol: Tolerance) -> list[Flag]:
    out = []
    for _, curve in acc.groupby(_keys(acc, CURVE_KEYS), dropna=False, sort=False):
        curve = curve.sort_values("eps")
        points = list(zip(curve["eps"], curve["acc"], curve["n"], strict=True))
        for (eps_a, acc_a, _), (eps_b, acc_b, n) in zip(points, points[1:], strict=False):
            if eps_b > eps_a and _beyond_noise(acc_b, acc_a, n, tol):
                row = curve.iloc[0]
                out.append(Flag(
                    "non-monotone", Severity.ERROR, row["model"], row["attack"], float(eps_b),
                    f"robust accuracy rises from {acc_a:.3f} at eps={eps_a:g} to {acc_b:.3f} at eps={eps_b:g}: "
                    "the attack is failing (too few steps or EOT samples, or masked gradients); add steps, "
                    "restarts and K_attack, and run Square as a gradient-free check",
                ))  # fmt: skip
    return out


def _not_near_zero(acc: pd.DataFrame, kinds: Families, tol: Tolerance) -> list[Flag]:
    out = []
    iterative = acc[acc["family"].isin(kinds.iterative)]
    for _, curve in iterative.groupby(_keys(iterative, CURVE_KEYS), dropna=False, sort=False):
        row = curve.loc[curve["eps"].idxmax()]
        if row["eps"] < tol.large_eps:
            continue
        if _beyond_noise(row["acc"], tol.near_zero, row["n"], tol, floor=0.0):
            out.append(Flag(
                "not-near-zero", Severity.WARNING, row["model"], row["attack"], float(row["eps"]),
                f"robust accuracy is still {row['acc']:.3f} at eps={row['eps']:g}, a budget at which a correct "
                "attack on an undefended model reaches about 0: suspect masked gradients or too weak an "
                "attack; check the gradient flags, run Square, raise steps and K_attack",
            ))  # fmt: skip
    return out


def _largest_k(acc: pd.DataFrame) -> pd.DataFrame:
    """Per attack and budget, only the rows at its largest K_attack: an EOT study's K_attack = 1 PGD is
    meant to be weak, so comparing it with FGSM at K_attack = 20 would raise a false flag."""
    if "k_attack" not in acc:
        return acc
    keys = _keys(acc, ("model", "attack", "norm", "eps", "eot", "k_eval", "seed", "restarts"))
    largest = acc.groupby(keys, dropna=False, sort=False)["k_attack"].transform("max")
    return acc[(acc["k_attack"] == largest) | largest.isna()]


def _by_budget(acc: pd.DataFrame) -> Any:
    return acc.groupby(_keys(acc, ("model", "norm", "eps", "k_eval", "seed")), dropna=False, sort=False)


def _iterative_vs_fgsm(acc: pd.DataFrame, kinds: Families, tol: Tolerance) -> list[Flag]:
    out = []
    for _, group in _by_budget(acc):
        fgsm = group[group["family"].isin(kinds.single_step)]
        if fgsm.empty:
            continue
        best_fgsm = fgsm.loc[fgsm["acc"].idxmin()]
        for _, row in group[group["family"].isin(kinds.iterative)].iterrows():
            if _beyond_noise(row["acc"], best_fgsm["acc"], row["n"], tol):
                out.append(Flag(
                    "iterative-weaker-than-fgsm", Severity.ERROR, row["model"], row["attack"], float(row["eps"]),
                    f"{row['attack']} leaves {row['acc']:.3f} robust accuracy, FGSM only {best_fgsm['acc']:.3f}: "
                    "an iterative attack must be at least as strong; check its step size, steps and EOT "
                    "samples, and for masked or noisy gradients",
                ))  # fmt: skip
    return out


def _square_stronger(acc: pd.DataFrame, kinds: Families, tol: Tolerance) -> list[Flag]:
    out = []
    for _, group in _by_budget(acc):
        square = group[group["family"].isin(kinds.gradient_free)]
        gradient = group[group["family"].isin(kinds.iterative | kinds.single_step)]
        if square.empty or gradient.empty:
            continue
        best_square = square.loc[square["acc"].idxmin()]
        best_gradient = gradient.loc[gradient["acc"].idxmin()]
        if _beyond_noise(best_gradient["acc"], best_square["acc"], best_square["n"], tol):
            out.append(Flag(
                "square-stronger", Severity.ERROR, best_square["model"], best_square["attack"],
                float(best_square["eps"]),
                f"the gradient-free {best_square['attack']} leaves {best_square['acc']:.3f} robust accuracy, "
                f"the best gradient attack ({best_gradient['attack']}) {best_gradient['acc']:.3f}: the input "
                "gradients are masked or uninformative; do not trust the gradient attacks' numbers (try BPDA, "
                "more EOT samples, or a smoother surrogate)",
            ))  # fmt: skip
    return out


def _eot_not_converged(acc: pd.DataFrame, tol: Tolerance) -> list[Flag]:
    out: list[Flag] = []
    if "k_attack" not in acc:
        return out
    keys = _keys(acc, ("model", "attack", "norm", "eps", "eot", "k_eval", "seed", "restarts"))
    for _, group in acc.groupby(keys, dropna=False, sort=False):
        ks = group.groupby("k_attack")["acc"].mean().sort_index()
        if len(ks) < 2:
            continue
        (k_lo, k_hi), (acc_lo, acc_hi) = ks.index[-2:].astype(float), ks.to_numpy()[-2:]
        if k_hi < 2 * k_lo:
            continue
        row = group.iloc[0]
        if _beyond_noise(acc_lo, acc_hi, row["n"], tol, floor=tol.eot_drop):
            out.append(Flag(
                "eot-not-converged", Severity.WARNING, row["model"], row["attack"], float(row["eps"]),
                f"robust accuracy falls from {acc_lo:.3f} at K_attack={k_lo:g} to {acc_hi:.3f} at "
                f"K_attack={k_hi:g}: EOT has not converged; raise K_attack until doubling it no longer "
                "lowers robust accuracy",
            ))  # fmt: skip
    return out


def _gradient_flags(results: pd.DataFrame, tol: Tolerance) -> list[Flag]:
    if results.empty or "metric" not in results:
        return []
    rows = results[results["metric"].isin(GRADIENT_METRICS)]
    out = []
    for _, row in rows.iterrows():
        value, metric = float(row["value"]), row["metric"]
        eps = float(row["eps"]) if "eps" in row and pd.notna(row["eps"]) else 0.0
        attack = str(row.get("attack", GRADIENT_CHECK))
        if metric == "grad_zero_fraction" and value > tol.grad_zero_fraction:
            out.append(Flag(
                "zero-gradients", Severity.ERROR, row["model"], attack, eps,
                f"{value:.1%} of the input-gradient entries of the attack loss are exactly 0: gradient attacks "
                "cannot move those pixels (a non-differentiable or saturated op masks the gradient); use BPDA "
                "or a gradient-free attack, and do not trust gradient-attack numbers",
            ))  # fmt: skip
        elif metric in ("grad_nan_fraction", "grad_inf_fraction") and value > 0:
            kind = "NaN" if metric == "grad_nan_fraction" else "infinite"
            out.append(Flag(
                "nonfinite-gradients", Severity.ERROR, row["model"], attack, eps,
                f"{value:.1%} of the input-gradient entries are {kind}: the model or its loss is numerically "
                "broken (log of 0, overflow); fix it before attacking",
            ))  # fmt: skip
    return out


def gradient_health(
    posterior: Any, x: torch.Tensor, y: torch.Tensor, k: int, seed: int = 0
) -> dict[str, float]:
    """Shares of exactly-zero, NaN and infinite entries of the input gradient of the EOT attack loss
    (mean NLL of log p̄ over `k` samples) on `x`, plus its mean absolute value: `{grad_zero_fraction,
    grad_nan_fraction, grad_inf_fraction, grad_abs_mean}`. Never raises on a masked model (unlike
    `evaluate.check_gradients`), so a sweep can record the numbers as rows (`gradient_health_rows`)."""
    from robusthyper.ensemble import StochasticEnsemble

    ensemble = StochasticEnsemble(posterior, k, torch.Generator(device=x.device).manual_seed(seed))
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.nll_loss(ensemble(x), y)
        (grad,) = torch.autograd.grad(loss, x)
    total = grad.numel()
    finite = torch.isfinite(grad)
    return {
        "grad_zero_fraction": float((grad == 0).sum()) / total,
        "grad_nan_fraction": float(torch.isnan(grad).sum()) / total,
        "grad_inf_fraction": float(torch.isinf(grad).sum()) / total,
        "grad_abs_mean": float(grad[finite].abs().mean()) if finite.any() else math.nan,
    }


def gradient_health_rows(model: str, health: dict[str, float], **settings: Any) -> list[dict[str, Any]]:
    """Tidy result rows for `gradient_health`'s numbers: attack 'gradient-check', eps 0, input 'clean';
    `settings` (dataset, n, k_attack, ...) are copied into every row."""
    base = {"model": model, "attack": GRADIENT_CHECK, "eps": 0.0, "input": "clean", **settings}
    return [{**base, "metric": metric, "value": float(value)} for metric, value in health.items()]


def flags_to_frame(found: list[Flag]) -> pd.DataFrame:
    """One row per flag (code, severity, model, attack, eps, message), to store with the results or gate on."""
    rows = [{**asdict(f), "severity": f.severity.value} for f in found]
    return pd.DataFrame(rows, columns=list(FLAG_COLUMNS))
