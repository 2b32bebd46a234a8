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
