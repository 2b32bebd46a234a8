"""Sample-based estimators of divergences, for posteriors without a tractable density (BbH)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def knn_kl(samples: Tensor, prior_samples: Tensor) -> Tensor:
    """1-nearest-neighbour estimate of KL(q || p) from samples of both (Wang, Kulkarni & Verdu 2009).

    `KL ~ d * mean_i log(nu_i / rho_i) + log(m / (n - 1))`, where `nu_i` is the distance from `samples[i]` to
    its nearest prior sample and `rho_i` to its nearest other sample of q (METHODS.md §2; BbH uses n = m = 5).
    Consistent as n, m grow. Differentiable in `samples`: its gradient pulls each sample towards the prior and
    pushes the samples apart.

    Args:
        samples: `[n, d]` samples of q, n >= 2.
        prior_samples: `[m, d]` samples of p, m >= 1.

    Returns:
        A scalar estimate (it can be negative at small n).
    """
    if samples.ndim != 2 or prior_samples.ndim != 2 or samples.shape[1] != prior_samples.shape[1]:
        raise ValueError(
            f"need [n, d] and [m, d] samples, got {tuple(samples.shape)} and {tuple(prior_samples.shape)}"
        )
    n, d = samples.shape
    m = prior_samples.shape[0]
    if n < 2 or m < 1:
        raise ValueError(f"the kNN KL estimator needs n >= 2 samples of q and m >= 1 of p (n={n}, m={m})")
    exact = "donot_use_mm_for_euclid_dist"  # |x|^2 + |y|^2 - 2xy loses the small distances that matter here
    own = torch.cdist(samples, samples, compute_mode=exact)
    own = own + torch.diag(torch.full((n,), math.inf, device=own.device, dtype=own.dtype))
    rho = own.min(dim=1).values
    nu = torch.cdist(samples, prior_samples, compute_mode=exact).min(dim=1).values
    tiny = torch.finfo(samples.dtype).tiny
    return d * (nu.clamp_min(tiny).log() - rho.clamp_min(tiny).log()).mean() + math.log(m / (n - 1))
