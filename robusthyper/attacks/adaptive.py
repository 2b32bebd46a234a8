"""Adaptive PGD against uncertainty-based detection (Carlini & Wagner 2017, "Adversarial examples are not
easily detected"; Feng, Rudner, Tsilivis, Kempe 2024, "Attacking Bayes"; METHODS.md §4).

A defender who flags inputs whose mutual information (or predictive entropy) exceeds a threshold is only
defended against attacks that ignore the flag. This attacker wants a misclassification *and* a low score, so
it maximises, per example,

    L(x) = CE(log p̄(.|x), y) - lambda * score(x),    score = MI or H[p̄] of the same K posterior samples

with Linf PGD: `steps` steps of x <- Proj_{B(x0, eps) ∩ [0,1]}(x + step_size * sign(grad_x L)) (default
step eps/4) from a uniform random point in the ball (numpy's global RNG, which the evaluation seeds, as for
ART's PGD). Every step draws K_attack fresh posterior samples (EOT). With `eot = "mean-loss"` the CE term is
the mean of the K per-sample cross-entropies instead. lambda = 0 is plain PGD-EOT (`adaptive_loss` then
equals the ART estimator's loss). ART cannot take this loss (its estimator's loss sees only log p̄, not the
K samples), hence this small torch loop; restarts are run by the evaluation.

Why two phases (lambda > 0): with one fixed objective from the start, the bounded score term (MI <= log C)
pulls towards confident *correct* predictions as much as towards confident wrong ones, and on MC dropout at
eps 0.2 the attack misclassified far fewer inputs than plain PGD (robust accuracy 0.71 vs 0.02). So the
score term only acts on examples the current iterate already misclassifies (PGD until the label flips, then
CE - lambda * score keeps it wrong while lowering the score), and the attack returns, per example, the
misclassified iterate with the lowest score seen (on the step's own K samples; the latest among ties, so a
deterministic net, whose MI is always 0, gets PGD's final, most confident iterate), else the final iterate
(Carlini & Wagner 2017 keep the best iterate the same way).

`detection_aware_accuracy` scores a defended model: an example counts as defended when the model classifies
its adversarial version correctly *or* flags it, with the flag threshold set on clean inputs for a 5% false
positive rate. `detection_table` computes it per (model, attack, eps) from an evaluation's `.examples`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from robusthyper.attacks.base import Norm
from robusthyper.ensemble import EotMode, StochasticEnsemble
from robusthyper.metrics import log_predictive, mutual_information, nll, predictive_entropy

if TYPE_CHECKING:
    from robusthyper.attacks.spec import AttackSpec


def detection_score(logits: Tensor, score: str = "mi") -> Tensor:
    """The detection score of K samples' logits `[K, B, C] -> [B]`: mutual information or entropy (nats)."""
    if score == "mi":
        return mutual_information(logits)
    if score == "entropy":
        return predictive_entropy(logits)
    raise ValueError(f"unknown detection score '{score}'; known: mi, entropy")


def adaptive_loss(
    logits: Tensor,
    y: Tensor,
    weight: float,
    score: str = "mi",
    eot: EotMode | str = EotMode.BMA,
) -> Tensor:
    """Per-example attack objective `[B]` (to maximise): CE - weight * score, from `[K, B, C]` logits.

    `eot = bma`: CE of the model average, -log p̄(y|x) (the default attack loss); `mean-loss`: the mean over
    the K samples of CE(f_k(x), y).
    """
    if EotMode(eot) is EotMode.BMA:
        ce = nll(log_predictive(logits), y)
    else:
        k, b, c = logits.shape
        per = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(k), reduction="none")
        ce = per.view(k, b).mean(dim=0)
    if weight == 0:
        return ce
    return ce - weight * detection_score(logits, score)


class AdaptivePGD:
    """Linf PGD with EOT on `adaptive_loss`, an `Attack` (`generate(x, y) -> x_adv` on tensors); the family is
    declared in `robusthyper.attacks.pgd_adaptive`."""

    def __init__(self, ensemble: StochasticEnsemble, spec: AttackSpec, batch_size: int = 128) -> None:
        if spec.norm is not Norm.LINF:
            raise ValueError("pgd-adaptive supports the Linf norm only")
        self.ensemble = ensemble
        self.eps = float(spec.eps)
        self.steps = int(spec.steps)
        self.step_size = spec.step
        self.random_init = bool(spec.random_init)
        self.weight = float(spec.detection_weight)
        self.score = spec.detection_score
        self.eot = spec.eot
        self.batch_size = batch_size

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-example objective at `x` with K fresh samples (the one-phase objective)."""
        return adaptive_loss(self.ensemble.sample_logits(x), y, self.weight, self.score, self.eot)

    def _step_objective(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The two-phase objective at `x` on K fresh samples, with which examples `x` misclassifies and
        their detection scores (both detached)."""
        logits = self.ensemble.sample_logits(x)
        ce = adaptive_loss(logits, y, 0.0, self.score, self.eot)
        wrong = (log_predictive(logits).argmax(-1) != y).detach()
        score = detection_score(logits, self.score)
        return ce - self.weight * score * wrong, wrong, score.detach()

    def perturb(self, x0: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for one batch of tensors (index labels `[B]`)."""
        if self.random_init:
            noise = np.random.uniform(-self.eps, self.eps, size=tuple(x0.shape)).astype(np.float32)
            x = (x0 + torch.from_numpy(noise).to(x0.device)).clamp(0.0, 1.0)
        else:
            x = x0.clone()
        lower, upper = (x0 - self.eps).clamp_min(0.0), (x0 + self.eps).clamp_max(1.0)
        track = self.weight > 0
        best = x.detach().clone()
        best_score = torch.full((len(x0),), math.inf, device=x0.device)

        def keep_best(x_now: Tensor, wrong: Tensor, score: Tensor) -> None:
            better = wrong & (score <= best_score)
            best[better] = x_now[better]
            best_score[better] = score[better]

        for _ in range(self.steps):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                objective, wrong, score = self._step_objective(x, y)
                (grad,) = torch.autograd.grad(objective.sum(), x)
            if track:
                keep_best(x.detach(), wrong, score)
            x = torch.minimum(torch.maximum(x.detach() + self.step_size * grad.sign(), lower), upper)
        if not track:
            return x.detach()
        with torch.no_grad():
            _, wrong, score = self._step_objective(x, y)
        keep_best(x, wrong, score)
        return torch.where(torch.isfinite(best_score).view(-1, *[1] * (x.dim() - 1)), best, x).detach()

    def generate(self, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for `x` `[N, ...]` and true index labels `y` `[N]` (on the ensemble's device),
        in batches of `batch_size`."""
        parts = [
            self.perturb(x[start : start + self.batch_size], y[start : start + self.batch_size])
            for start in range(0, len(x), self.batch_size)
        ]
        return torch.cat(parts) if parts else x.detach().clone()


def detection_threshold(clean_scores: np.ndarray, fpr: float = 0.05) -> float:
    """The smallest clean score t such that at most floor(fpr * n) clean inputs score above t (flag: > t)."""
    scores = np.sort(np.asarray(clean_scores, dtype=np.float64))
    if scores.size == 0:
        raise ValueError("no clean scores to set a detection threshold on")
    if not 0 <= fpr < 1:
        raise ValueError(f"fpr {fpr} must be in [0, 1)")
    allowed = math.floor(fpr * scores.size + 1e-9)
    return float(scores[scores.size - 1 - allowed])


def detection_aware_accuracy(
    clean_scores: np.ndarray, adv_scores: np.ndarray, adv_correct: np.ndarray, fpr: float = 0.05
) -> float:
    """Share of examples defended: classified correctly under attack, or flagged (adversarial score above
    the threshold that flags at most `fpr` of clean inputs). Counts over all examples, as robust accuracy."""
    adv_scores, adv_correct = np.asarray(adv_scores), np.asarray(adv_correct, dtype=bool)
    if adv_scores.shape != adv_correct.shape:
        raise ValueError("adv_scores and adv_correct must have the same shape")
    flagged = adv_scores > detection_threshold(clean_scores, fpr)
    return float(np.mean(adv_correct | flagged)) if adv_correct.size else math.nan


def detection_table(examples: pd.DataFrame, score: str = "mi", fpr: float = 0.05) -> pd.DataFrame:
    """Per (model, attack, norm, eps, k_eval, seed) of an evaluation's `.examples`: robust accuracy,
    detection-aware robust accuracy, the share of adversarial inputs flagged, and the clean threshold."""
    column = {"mi": "mi", "entropy": "entropy"}[score]
    keys = [k for k in ("model", "attack", "norm", "eps", "k_eval", "seed") if k in examples.columns]
    rows = []
    for key, group in examples.groupby(keys, sort=True, dropna=False):
        clean, adv = group[f"clean_{column}"].to_numpy(), group[f"adv_{column}"].to_numpy()
        correct = group["adv_correct"].to_numpy().astype(bool)
        threshold = detection_threshold(clean, fpr)
        rows.append({
            **dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
            "score": score, "fpr": fpr, "threshold": threshold, "robust_acc": float(correct.mean()),
            "detection_aware_acc": detection_aware_accuracy(clean, adv, correct, fpr),
            "flagged": float(np.mean(adv > threshold)),
        })  # fmt: skip
    return pd.DataFrame(rows)
