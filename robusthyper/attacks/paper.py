"""The papers' own FGSM protocols, replayed so a report can show by how much they overstate robustness
(METHODS.md §1 and §2). Both are *weak* on purpose; never use them as a robustness claim.

- `paper-bhn-fgsm` (Bayesian Hypernetworks, Krueger et al. 2017, the authors' Theano code's default):
  x_adv = x + eps * sign(grad_x CE), the gradient from a single posterior sample (`k_attack = 1`; a larger
  `k_attack` uses the model average of that many samples), with no clipping to [0, 1].
- `paper-bbh-fgsm` (Bayes by Hypernet, Pawlowski et al. 2017, the authors' TensorFlow code): the mean of
  `samples_averaged` (100) single-sample FGSM images, i.e. x_adv = x + eps * mean_j sign(grad_x CE_j) with
  a fresh posterior sample per j; the averaged signs give a perturbation smaller than eps wherever the samples
  disagree. No clipping; the paper used the first 100 test images (run with `--n 100`).

Both keep `clip = false` by default (the papers' inputs leave [0, 1]); `clip = true` clamps to [0, 1]. The
spec's `protocol` property ('paper-bhn', 'paper-bbh') and the attack name mark the rows as the papers'.
The families are declared in `paper_bhn.py` and `paper_bbh.py`; `PaperFgsm` is the `Attack` both build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from robusthyper.ensemble import StochasticEnsemble
from robusthyper.metrics import log_predictive, nll

if TYPE_CHECKING:
    from robusthyper.attacks.spec import AttackSpec


def input_gradient(ensemble: StochasticEnsemble, x: Tensor, y: Tensor, k: int) -> Tensor:
    """grad_x of sum_i -log p̄(y_i|x_i) over k fresh posterior samples (k = 1: one sample's CE)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = nll(log_predictive(ensemble.sample_logits(x, k)), y).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def bhn_fgsm(ensemble: StochasticEnsemble, x: Tensor, y: Tensor, eps: float, clip: bool = False) -> Tensor:
    """BHN's FGSM: one step of eps along the sign of one K-sample gradient (K = `ensemble.k`)."""
    x_adv = x + eps * input_gradient(ensemble, x, y, ensemble.k).sign()
    return x_adv.clamp(0.0, 1.0) if clip else x_adv


def bbh_fgsm(
    ensemble: StochasticEnsemble, x: Tensor, y: Tensor, eps: float, samples: int = 100, clip: bool = False
) -> Tensor:
    """BbH's FGSM: x + eps * mean over `samples` draws of sign(grad) (each from `ensemble.k` samples)."""
    signs = torch.zeros_like(x)
    for _ in range(samples):
        signs += input_gradient(ensemble, x, y, ensemble.k).sign()
    x_adv = x + eps * signs / samples
    return x_adv.clamp(0.0, 1.0) if clip else x_adv


class PaperFgsm:
    """A paper's FGSM protocol as an `Attack`: `generate(x, y) -> x_adv`. `samples` None is BHN's (one
    gradient), a number is BbH's (the mean of that many single-sample gradient signs)."""

    def __init__(self, ensemble: StochasticEnsemble, spec: AttackSpec, batch_size: int = 128,
                 samples: int | None = None) -> None:  # fmt: skip
        self.ensemble = ensemble
        self.spec = spec
        self.batch_size = batch_size
        self.samples = samples

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        spec = self.spec
        if self.samples is None:
            return bhn_fgsm(self.ensemble, x, y, spec.eps, spec.clip)
        return bbh_fgsm(self.ensemble, x, y, spec.eps, self.samples, spec.clip)

    def generate(self, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for `x` `[N, ...]` and true index labels `y` `[N]` (on the ensemble's device),
        in batches of `batch_size`."""
        parts = [
            self.perturb(x[start : start + self.batch_size], y[start : start + self.batch_size]).detach()
            for start in range(0, len(x), self.batch_size)
        ]
        return torch.cat(parts) if parts else x.detach().clone()
