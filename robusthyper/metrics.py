"""Predictive quantities computed from K posterior samples' logits `[K, B, C]` (pure torch)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def log_predictive(logits: Tensor) -> Tensor:
    """log p̄(y|x) = logsumexp_k log_softmax(f_k(x)) - log K: the Bayesian model average, in log space.

    `[K, B, C] -> [B, C]`. Never average logits, and never take the log of averaged probabilities: both
    lose the model average or its gradients.
    """
    return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - math.log(logits.shape[0])


def accuracy(log_probs: Tensor, labels: Tensor) -> float:
    """Share of examples whose arg-max class is the label; `log_probs` `[B, C]`."""
    return (log_probs.argmax(dim=-1) == labels).float().mean().item()


def predictive_entropy(logits: Tensor) -> Tensor:
    """Total uncertainty H[p̄] = -sum_c p̄_c log p̄_c of the model average, in nats; `[K, B, C] -> [B]`."""
    log_p = log_predictive(logits)
    return -(log_p.exp() * log_p).sum(dim=-1)


def expected_entropy(logits: Tensor) -> Tensor:
    """Aleatoric part mean_k H[p_k], in nats; `[K, B, C] -> [B]`."""
    log_pk = torch.log_softmax(logits, dim=-1)
    return -(log_pk.exp() * log_pk).sum(dim=-1).mean(dim=0)


def mutual_information(logits: Tensor) -> Tensor:
    """Epistemic uncertainty H[p̄] - mean_k H[p_k] (BALD; the adversarial detector of Smith & Gal 2018).

    `[K, B, C] -> [B]`, in nats, clamped at 0 against rounding (it is 0 for K = 1 or identical samples).
    """
    return (predictive_entropy(logits) - expected_entropy(logits)).clamp_min(0.0)


def nll(log_probs: Tensor, labels: Tensor) -> Tensor:
    """Per-example negative log-likelihood -log p̄(y|x); `log_probs` `[B, C]`, labels `[B]` -> `[B]`."""
    return -log_probs.gather(-1, labels[:, None]).squeeze(-1)


def brier(log_probs: Tensor, labels: Tensor) -> Tensor:
    """Per-example Brier score sum_c (p̄_c - 1[c = y])^2; `[B, C]`, `[B]` -> `[B]` (0 best, 2 worst)."""
    probs = log_probs.exp()
    onehot = torch.nn.functional.one_hot(labels, probs.shape[-1]).to(probs.dtype)
    return (probs - onehot).square().sum(dim=-1)


def expected_calibration_error(log_probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins (torchmetrics' implementation, L1 norm)."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = log_probs.exp()
    return float(multiclass_calibration_error(probs, labels, num_classes=probs.shape[-1], n_bins=n_bins))


def reliability_bins(log_probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, Tensor]:
    """Per confidence bin: mean confidence, accuracy and count (the reliability diagram's data).

    Bins are (lo, hi] of width 1/n_bins, as torchmetrics uses, so sum(count * |acc - conf|) / N is its ECE.
    """
    confidence, predicted = log_probs.exp().max(dim=-1)
    correct = (predicted == labels).to(confidence.dtype)
    index = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).to(confidence.dtype)
    safe = count.clamp_min(1)
    return {
        "lower": torch.arange(n_bins, dtype=confidence.dtype) / n_bins,
        "confidence": torch.bincount(index, weights=confidence, minlength=n_bins) / safe,
        "accuracy": torch.bincount(index, weights=correct, minlength=n_bins) / safe,
        "count": count,
    }


def auroc(negative_scores: Tensor, positive_scores: Tensor) -> float:
    """Area under the ROC curve for telling positives (adversarial, OOD) from negatives (clean, in-distribution)
    by a score where higher means "more likely positive"; 0.5 is chance, ties count half."""
    from sklearn.metrics import roc_auc_score

    scores = torch.cat([negative_scores, positive_scores]).detach().cpu().double().numpy()
    truth = [0] * len(negative_scores) + [1] * len(positive_scores)
    if len(negative_scores) == 0 or len(positive_scores) == 0:
        return float("nan")
    return float(roc_auc_score(truth, scores))
