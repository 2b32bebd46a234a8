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
