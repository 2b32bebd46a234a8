"""What one cell of an evaluation computes, on the n test examples it is given.

- An **attack cell** (one model, one `AttackSpec`): adversarial examples crafted batch by batch against the
  model average with K_attack samples per step (`robusthyper.attacks`), all restarts, then clean and
  adversarial inputs evaluated with K_eval fresh samples. Evaluation draws from a generator seeded per
  (seed, batch), so the clean and adversarial passes of a batch use the same posterior samples (common random
  numbers: eps = 0 reproduces the clean numbers exactly). Robust accuracy counts correct-under-attack over
  *all* n examples (RobustBench); restarts combine per example into the worst case.
- An **OOD cell** (one model, one OOD set): AUROC of in-distribution vs OOD inputs by predictive entropy and
  by mutual information, and the mean scores on the OOD inputs.
- A **probe cell** (one model): the input-gradient health of the attack loss on up to 32 examples
  (`robusthyper.sanity.gradient_health`); a model whose gradient is all zero or not finite is evaluated all the
  same, with one warning line, and the sanity flags mark it.

Every cell reseeds the global RNGs first (ART's random starts and Square use numpy's), so its numbers do not
depend on which cells ran before it. Sanity: every adversarial input lies within eps of its clean input and,
unless the spec is one of the papers' unclipped protocols, in [0, 1] (else a RuntimeError: a bug).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from robusthyper.attacks import AttackSpec, Norm, build_attack
from robusthyper.data import Split
from robusthyper.ensemble import StochasticEnsemble
from robusthyper.metrics import auroc, log_predictive, mutual_information, nll, predictive_entropy
from robusthyper.nets import frozen
from robusthyper.posteriors.base import Posterior
from robusthyper.run import schema as s

log = logging.getLogger(__name__)

NORM_TOLERANCE = 1e-5
"""Slack on ||delta|| <= eps for float32 rounding in the attacks' projections."""
GRADIENT_PROBE = 32
"""Examples on which the input-gradient health of a model is probed."""

Row = dict[str, Any]


@dataclass
class Outcome:
    """Per-example arrays `[n]` for one input set (clean or adversarial)."""

    correct: np.ndarray
    nll: np.ndarray
    entropy: np.ndarray
    mi: np.ndarray
    confidence: np.ndarray
    """max_c p̄_c, the model average's confidence in its prediction (for reliability diagrams)."""
    norm: np.ndarray | None = None
    """Adversarial inputs: the norm of each perturbation."""
    seconds: float = 0.0

    def worse(self, other: Outcome) -> Outcome:
        """Per example, the worse of two outcomes: misclassified first, then the higher NLL."""
        take = (other.correct < self.correct) | ((other.correct == self.correct) & (other.nll > self.nll))

        def pick(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.where(take, b, a)

        norms = None if self.norm is None or other.norm is None else pick(self.norm, other.norm)
        return Outcome(pick(self.correct, other.correct), pick(self.nll, other.nll),
                       pick(self.entropy, other.entropy), pick(self.mi, other.mi),
                       pick(self.confidence, other.confidence), norms, self.seconds + other.seconds)  # fmt: skip

    @classmethod
    def concat(cls, parts: Sequence[dict[str, np.ndarray]], seconds: float = 0.0) -> Outcome:
        def join(key: str) -> np.ndarray:
            return np.concatenate([p[key] for p in parts])

        norm = join("norm") if parts and "norm" in parts[0] else None
        return cls(join("correct"), join("nll"), join("entropy"), join("mi"), join("confidence"), norm, seconds)

    @classmethod
    def from_examples(cls, frame: pd.DataFrame, which: str, seconds: float = 0.0) -> Outcome:
        """The clean (`which` 'clean') or adversarial ('adv') outcome recorded in an examples table."""

        def column(name: str) -> np.ndarray:
            return frame[f"{which}_{name}"].to_numpy()

        norm = frame[s.PERTURBATION].to_numpy() if which == "adv" else None
        return cls(column("correct"), column("nll"), column("entropy"), column("mi"), column("confidence"),
                   norm, seconds)  # fmt: skip


def eval_generator(device: torch.device, seed: int, batch_index: int) -> torch.Generator:
    """The generator of one evaluation batch: the same for clean and adversarial inputs of that batch."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + batch_index + 7)


@torch.no_grad()
def evaluate_batch(posterior: Posterior, x: torch.Tensor, y: torch.Tensor, k: int,
                   gen: torch.Generator) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-example correctness, NLL, entropy, MI and confidence of the model average over k samples."""
    logits = StochasticEnsemble(posterior, k, gen).sample_logits(x)
    log_p = log_predictive(logits)
    return {
        "correct": (log_p.argmax(-1) == y).cpu().numpy(),
        "nll": nll(log_p, y).cpu().numpy(),
        "entropy": predictive_entropy(logits).cpu().numpy(),
        "mi": mutual_information(logits).cpu().numpy(),
        "confidence": log_p.max(-1).values.exp().cpu().numpy(),
    }


def seed_everything(seed: int) -> None:
    """ART's random starts and Square use numpy's global RNG (Square's L2 steps Python's too), some tools
    torch's: seed all three per cell."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _perturbation_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm is Norm.LINF else flat.norm(dim=1)


def num_classes(posterior: Posterior, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(posterior.logits(x, 1, torch.Generator(device=x.device).manual_seed(0)).shape[-1])


# ------------------------------------------------------------------------------------------------- attack cells


def clean_outcome(posterior: Posterior, x: torch.Tensor, y: torch.Tensor, k: int, seed: int,
                  batch_size: int) -> Outcome:  # fmt: skip
    device = posterior.device
    parts = [evaluate_batch(posterior, x[i : i + batch_size], y[i : i + batch_size], k,
                            eval_generator(device, seed, b))
             for b, i in enumerate(range(0, len(y), batch_size))]  # fmt: skip
    return Outcome.concat(parts)


def attack_outcome(
    posterior: Posterior, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, batch_size: int,
    tick: Callable[[int], None] = lambda _: None,
) -> Outcome:  # fmt: skip
    """Run one spec (all restarts) over every batch; evaluate with K_eval; worst case over restarts."""
    device = posterior.device
    input_shape, classes = tuple(x.shape[1:]), num_classes(posterior, x[:1])
    best: Outcome | None = None
    for restart in range(spec.restarts):
        started = time.perf_counter()
        parts = []
        # Seeds per restart: the posterior samples and numpy's random starts differ between restarts.
        attack_gen = torch.Generator(device=device).manual_seed(spec.seed * 7919 + restart)
        attack = None if spec.eps == 0 else build_attack(posterior, spec, input_shape, classes, batch_size,
                                                         attack_gen)  # fmt: skip
        np.random.seed((spec.seed * 7919 + restart) % 2**32)
        random.seed(spec.seed * 7919 + restart)  # ART's Square draws its L2 steps from Python's RNG
        for b, start in enumerate(range(0, len(y), batch_size)):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            x_adv = xb if attack is None else attack.generate(xb, yb)  # true labels, never predictions
            delta_norm = _perturbation_norm(x_adv - xb, spec.norm)
            # The papers' protocols (clip = false) may leave [0, 1] as their code did; the eps budget holds always.
            outside = spec.clip and bool(x_adv.min() < 0 or x_adv.max() > 1)
            if outside or delta_norm.max() > spec.eps + NORM_TOLERANCE:
                raise RuntimeError(
                    f"{spec.label} produced inputs outside [0, 1] or beyond eps={spec.eps:g} "
                    f"(max norm {delta_norm.max().item():.6g}); this is a bug"
                )
            out = evaluate_batch(posterior, x_adv, yb, spec.k_eval, eval_generator(device, spec.seed, b))
            parts.append({**out, "norm": delta_norm.cpu().numpy()})
            tick(len(yb))
        outcome = Outcome.concat(parts, seconds=time.perf_counter() - started)
        best = outcome if best is None else best.worse(outcome)
    assert best is not None
    return best


def base_row(name: str, kind: str, spec: AttackSpec, dataset: str, n: int) -> Row:
    """The settings columns of an attack cell's result rows (its spec, as the plan decided it)."""
    settings = spec.settings()
    return {
        s.MODEL: name, s.POSTERIOR: kind, s.DATASET: dataset, s.N: n, s.ATTACK: spec.label,
        s.FAMILY: settings["attack"], s.NORM: settings["norm"], s.EPS: settings["eps"],
        s.STEPS: settings["steps"], s.STEP_SIZE: settings["step_size"], s.RESTARTS: settings["restarts"],
        s.RANDOM_INIT: settings["random_init"], s.EOT: settings["eot"], s.K_ATTACK: settings["k_attack"],
        s.K_EVAL: settings["k_eval"], s.SEED: settings["seed"], s.PROTOCOL: spec.protocol,
    }  # fmt: skip


def outcome_rows(base: Row, clean: Outcome, adv: Outcome) -> list[Row]:
    """The result rows of one attack cell (or a worst case): the input metrics on clean and adversarial
    inputs, and on adversarial inputs the largest perturbation and the attack's seconds."""
    rows = []
    for which, outcome in ((s.CLEAN, clean), (s.ADVERSARIAL, adv)):
        values = {s.ACCURACY: outcome.correct.mean(), s.NLL: outcome.nll.mean(), s.ENTROPY: outcome.entropy.mean(),
                  s.MI: outcome.mi.mean()}  # fmt: skip
        if which == s.ADVERSARIAL:
            if outcome.norm is not None:
                values[s.MAX_PERTURBATION] = outcome.norm.max()
            values[s.SECONDS] = outcome.seconds
        rows += [{**base, s.INPUT: which, s.METRIC: m, s.VALUE: float(v)} for m, v in values.items()]
    return rows


def example_frame(base: Row, clean: Outcome, adv: Outcome) -> pd.DataFrame:
    """Per-example outcomes of one attack cell (or a worst case), keyed like `schema.EXAMPLE_COLUMNS`."""
    n = len(clean.correct)
    return pd.DataFrame({
        s.MODEL: base[s.MODEL], s.ATTACK: base[s.ATTACK], s.FAMILY: base[s.FAMILY], s.NORM: base[s.NORM],
        s.EPS: base[s.EPS], s.K_ATTACK: base[s.K_ATTACK], s.PROTOCOL: base[s.PROTOCOL], s.K_EVAL: base[s.K_EVAL],
        s.SEED: base[s.SEED], s.INDEX: np.arange(n),
        s.CLEAN_CORRECT: clean.correct, s.ADV_CORRECT: adv.correct,
        s.CLEAN_ENTROPY: clean.entropy, s.ADV_ENTROPY: adv.entropy,
        s.CLEAN_MI: clean.mi, s.ADV_MI: adv.mi,
        s.CLEAN_NLL: clean.nll, s.ADV_NLL: adv.nll,
        s.CLEAN_CONFIDENCE: clean.confidence, s.ADV_CONFIDENCE: adv.confidence,
        s.PERTURBATION: adv.norm if adv.norm is not None else np.nan,
    })  # fmt: skip


def attack_cell(
    name: str,
    kind: str,
    posterior: Posterior,
    spec: AttackSpec,
    split: Split,
    *,
    dataset: str,
    n: int,
    batch_size: int,
    clean_cache: dict[tuple[Any, ...], Outcome] | None = None,
    tick: Callable[[int], None] = lambda _: None,
) -> tuple[list[Row], pd.DataFrame]:
    """One (model, spec) cell on the first n examples of `split`: its result rows and per-example table.
    `clean_cache` shares clean evaluations between the cells of one process (they depend on K_eval and
    seed only)."""
    seed_everything(spec.seed)
    device = posterior.device
    x, y = split.x[:n].to(device), split.y[:n].to(device)
    with frozen(posterior):
        key = (id(posterior), n, batch_size, spec.k_eval, spec.seed)
        clean = None if clean_cache is None else clean_cache.get(key)
        if clean is None:
            clean = clean_outcome(posterior, x, y, spec.k_eval, spec.seed, batch_size)
            if clean_cache is not None:
                clean_cache[key] = clean
        adv = attack_outcome(posterior, spec, x, y, batch_size, tick)
    log.info("%s %s eps=%g: robust accuracy %.4f", name, spec.label, spec.eps, adv.correct.mean())
    base = base_row(name, kind, spec, dataset, n)
    return outcome_rows(base, clean, adv), example_frame(base, clean, adv)


def worst_cases(
    cells: Sequence[tuple[AttackSpec, Row, pd.DataFrame, float]],
) -> tuple[list[Row], list[pd.DataFrame]]:
    """The per-example worst case over attacks, from one model's recorded attack cells (spec, one of the
    cell's result rows, its per-example table, its attack seconds): per (norm, eps, K_eval, seed) with two or
    more different attacks of the strong protocol (the papers' protocols never enter it), each example counts
    as broken if any attack broke it. Returns the worst cases' result rows and per-example tables."""
    groups: dict[tuple[Any, ...], list[tuple[AttackSpec, Row, pd.DataFrame, float]]] = {}
    for cell in cells:
        spec = cell[0]
        if spec.protocol == s.STRONG:
            groups.setdefault((spec.norm, spec.eps, spec.k_eval, spec.seed), []).append(cell)
    rows: list[Row] = []
    frames: list[pd.DataFrame] = []
    for members in groups.values():
        if len({spec.label for spec, *_ in members}) < 2:
            continue
        ordered = [frame.sort_values(s.INDEX, kind="stable") for _, _, frame, _ in members]
        clean = Outcome.from_examples(ordered[0], "clean")
        worst = Outcome.from_examples(ordered[0], "adv", members[0][3])
        for (*_, seconds), frame in zip(members[1:], ordered[1:], strict=True):
            worst = worst.worse(Outcome.from_examples(frame, "adv", seconds))
        first = members[0][1]
        base = {**{k: first[k] for k in (s.MODEL, s.POSTERIOR, s.DATASET, s.N, s.NORM, s.EPS, s.K_EVAL, s.SEED)},
                s.ATTACK: s.WORST_CASE, s.FAMILY: s.WORST_CASE, s.STEPS: math.nan, s.STEP_SIZE: math.nan,
                s.RESTARTS: math.nan, s.RANDOM_INIT: None,
                s.EOT: "+".join(sorted({str(spec.eot.value) for spec, *_ in members})),
                s.K_ATTACK: max(int(row[s.K_ATTACK]) for _, row, *_ in members), s.PROTOCOL: s.STRONG}  # fmt: skip
        rows += outcome_rows(base, clean, worst)
        frames.append(example_frame(base, clean, worst))
    return rows, frames


# ------------------------------------------------------------------------------------------------- OOD cells


@torch.no_grad()
def uncertainty_scores(posterior: Posterior, x: torch.Tensor, *, k_eval: int, seed: int,
                       batch_size: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """Predictive entropy and mutual information `[N]` of the model average over K_eval samples, drawn from
    the same per-batch generators as the evaluation of clean inputs."""
    device = posterior.device
    y = torch.zeros(len(x), dtype=torch.long, device=device)  # labels are not needed for the scores
    parts: dict[str, list[np.ndarray]] = {"entropy": [], "mi": []}
    with frozen(posterior):
        for b, start in enumerate(range(0, len(x), batch_size)):
            out = evaluate_batch(posterior, x[start : start + batch_size].to(device), y[start : start + batch_size],
                                 k_eval, eval_generator(device, seed, b))  # fmt: skip
            parts["entropy"].append(out["entropy"])
            parts["mi"].append(out["mi"])
    return {key: torch.from_numpy(np.concatenate(values)) for key, values in parts.items()}


def ood_auroc(posterior: Posterior, x_in: torch.Tensor, x_out: torch.Tensor, *, k_eval: int = 100, seed: int = 0,
              batch_size: int = 128) -> dict[str, float]:  # fmt: skip
    """OOD detection: AUROC of in-distribution `x_in` (negatives) vs `x_out` (positives), scored by predictive
    entropy and by mutual information (`{"entropy": .., "mi": ..}`; 0.5 is chance), plus the mean scores on
    `x_out` (`{"mean_entropy": .., "mean_mi": ..}`). Inputs `[N, C, H, W]` in [0, 1]."""
    inside = uncertainty_scores(posterior, x_in, k_eval=k_eval, seed=seed, batch_size=batch_size)
    outside = uncertainty_scores(posterior, x_out, k_eval=k_eval, seed=seed, batch_size=batch_size)
    out = {score: auroc(inside[score], outside[score]) for score in ("entropy", "mi")}
    out |= {f"mean_{score}": float(outside[score].double().mean()) for score in ("entropy", "mi")}
    return out


def ood_rows(name: str, kind: str, dataset: str, n: int, ood_set: str, k_eval: int, seed: int,
             values: dict[str, float]) -> list[Row]:  # fmt: skip
    """The result rows of one OOD cell (`values` from `ood_auroc`)."""
    base = {s.MODEL: name, s.POSTERIOR: kind, s.DATASET: dataset, s.N: n, s.ATTACK: s.OOD, s.FAMILY: s.OOD,
            s.NORM: None, s.EPS: math.nan, s.STEPS: math.nan, s.STEP_SIZE: math.nan, s.RESTARTS: math.nan,
            s.RANDOM_INIT: None, s.EOT: None, s.K_ATTACK: math.nan, s.K_EVAL: k_eval, s.SEED: seed,
            s.PROTOCOL: s.STRONG, s.INPUT: ood_set}  # fmt: skip
    rows = [{**base, s.METRIC: s.OOD_AUROC[score], s.VALUE: float(values[score])} for score in s.OOD_AUROC]
    rows += [{**base, s.METRIC: s.OOD_MEAN[score], s.VALUE: float(values[f"mean_{score}"])} for score in s.OOD_MEAN]
    return rows


def ood_cell(name: str, kind: str, posterior: Posterior, x_in: torch.Tensor, ood_set: str, x_out: torch.Tensor, *,
             dataset: str, k_eval: int, seed: int, batch_size: int) -> list[Row]:  # fmt: skip
    """The OOD rows of one model against one OOD set."""
    seed_everything(seed)
    values = ood_auroc(posterior, x_in, x_out, k_eval=k_eval, seed=seed, batch_size=batch_size)
    return ood_rows(name, kind, dataset, len(x_in), ood_set, k_eval, seed, values)


# ------------------------------------------------------------------------------------------------- probe cells


def probe_cell(name: str, kind: str, posterior: Posterior, split: Split, *, n: int, dataset: str, k_attack: int,
               seed: int) -> list[Row]:  # fmt: skip
    """The gradient-health rows of one model on its first min(n, GRADIENT_PROBE) examples (attack
    'gradient-check'), warning in one line when the gradient is all zero or not finite."""
    from robusthyper import sanity

    count = min(n, GRADIENT_PROBE)
    x, y = split.x[:count].to(posterior.device), split.y[:count].to(posterior.device)
    with frozen(posterior):
        health = sanity.gradient_health(posterior, x, y, k=k_attack, seed=seed)
    nonfinite = health["grad_nan_fraction"] + health["grad_inf_fraction"]
    if nonfinite > 0:
        log.warning(
            "%s: %.1f%% of the input-gradient entries of the attack loss are NaN or infinite on %d probe "
            "examples: the model or its loss is numerically broken; its attack numbers are unreliable "
            "(flagged nonfinite-gradients)", name, 100 * nonfinite, count,
        )  # fmt: skip
    elif health["grad_zero_fraction"] >= 1.0:
        log.warning(
            "%s: the input gradient of the attack loss is exactly zero on all %d probe examples: gradient "
            "attacks cannot move the inputs, so their robust accuracy is meaningless (flagged "
            "zero-gradients); use a gradient-free attack (square) or BPDA", name, count,
        )  # fmt: skip
    return sanity.gradient_health_rows(name, health, posterior=kind, dataset=dataset, n=count, k_attack=k_attack,
                                       seed=seed)  # fmt: skip
