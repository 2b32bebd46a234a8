"""The stochastic ensemble: a posterior as the Bayesian-model-average classifier that attacks see.

`StochasticEnsemble(posterior, k)` is an `nn.Module` whose `forward(x)` returns log p̄(y|x) `[B, C]`, the log of
the mean softmax over K *fresh* posterior samples (METHODS.md §4). Because EOT lives inside the module, every
tool that differentiates it (ART's FGSM, PGD, APGD, torchattacks) attacks the deployed predictor, with a fresh
set of K samples at every step.

`StochasticClassifier` is ART's `PyTorchClassifier` around the ensemble (`clip_values=(0, 1)`), with one of two
EOT gradient estimators, named in every result. Its `loss_gradient` (what ART's FGSM, PGD and APGD call) takes
input gradients only and runs one backward pass per piece of the batch (`StochasticEnsemble.gradient_pieces`),
so an attack's memory stays bounded as K grows:

- `bma` (default): the gradient of the loss of the mean, CE(log p̄, y). Cross-entropy applied to log p̄ equals
  its NLL (log-softmax is the identity on normalised log-probabilities), so ART, torchattacks and APGD-CE all
  take this gradient through the module alone.
- `mean-loss`: the mean of per-sample losses, mean_k CE(f_k, y), as torchattacks' EOTPGD and AutoAttack's
  `eot_iter` estimate it. It needs the K per-sample outputs, so it overrides `loss_gradient` and `compute_loss`.
  ART's `AutoProjectedGradientDescent(loss_type=...)` rebuilds a plain estimator around `estimator.model`
  and would bypass these overrides; `robusthyper.attacks.apgd` therefore passes `loss_type=None` and builds
  this estimator with the loss it needs.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robusthyper.chunking import (
    CPU_LIMITS,
    CPU_MAX_ROWS,
    CPU_MAX_ROWS_BACKWARD,
    CPU_MAX_ROWS_GRAD,
    row_limits,
)
from robusthyper.metrics import log_predictive
from robusthyper.posteriors.base import Posterior

DEFAULT_MAX_ROWS, DEFAULT_MAX_ROWS_GRAD, DEFAULT_MAX_ROWS_BACKWARD = (
    CPU_MAX_ROWS,
    CPU_MAX_ROWS_GRAD,
    CPU_MAX_ROWS_BACKWARD,
)
"""The CPU's limits (`robusthyper.chunking`); a GPU's are sized from its free memory on the first call."""


def _row_limit(name: str) -> property:
    """A K·B limit: the one set explicitly (argument or assignment), else the device's (`chunking.row_limits`)."""

    def get(self: StochasticEnsemble) -> int:
        return self._overrides.get(name, getattr(self._limits, name))

    def set(self: StochasticEnsemble, value: int) -> None:
        self._overrides[name] = value

    return property(get, set, doc=f"Largest K·B rows: {name} (see `robusthyper.chunking.RowLimits`).")


class EotMode(str, Enum):
    """How the attack gradient of a stochastic model is estimated from K samples per step."""

    BMA = "bma"
    """Gradient of the loss of the Bayesian model average, CE(log mean_k p_k, y) (the deployed predictor)."""
    MEAN_LOSS = "mean-loss"
    """Mean of the K per-sample losses, mean_k CE(f_k, y) (torchattacks' EOTPGD, AutoAttack's eot_iter)."""


class StochasticEnsemble(nn.Module):
    """log p̄ over K fresh posterior samples: `forward(x [B, ...]) -> [B, C]`.

    Args:
        posterior: any registered `Posterior` (or `loading.ModulePosterior` around a user's stochastic module).
        k: samples per forward pass; a point estimate (`posterior.stochastic` False) always uses 1.
        generator: drives posterior sampling; tools such as torchattacks reseed the global RNG, so the
            ensemble never samples from it. Default: a new generator seeded with 0 on the posterior's device.
        max_rows: largest K·B per posterior call without gradients (K is chunked above it).
        max_rows_grad: largest K·B per posterior call with gradients (the batch is chunked above it).
        max_rows_backward: largest K·B per backward pass in the ART estimator's `loss_gradient` (bounds memory).
            Each defaults to the device's (`robusthyper.chunking`): a CPU's cache-sized constants, or on a GPU
            as many rows as fit in a share of its free memory, measured on the first call's inputs.

    `train()`/`eval()` only flip this wrapper's flag: they never reach the posterior, so a tool that calls
    `.eval()` (ART's `predict`, torchattacks) cannot switch MC dropout off, and the posterior keeps whatever
    mode its owner set.
    """

    def __init__(
        self,
        posterior: Posterior,
        k: int,
        generator: torch.Generator | None = None,
        max_rows: int | None = None,
        max_rows_grad: int | None = None,
        max_rows_backward: int | None = None,
    ) -> None:
        super().__init__()
        if k <= 0:
            raise ValueError(f"k={k} must be positive")
        self.posterior = posterior
        self.k = posterior.samples(k)
        device = posterior.device
        self.generator = generator or torch.Generator(device=device).manual_seed(0)
        given = {"max_rows": max_rows, "max_rows_grad": max_rows_grad, "max_rows_backward": max_rows_backward}
        self._overrides = {name: value for name, value in given.items() if value is not None}
        self._limits = CPU_LIMITS
        self._sized = device.type == "cpu"  # a CPU's limits are constants; other devices measure on first use

    max_rows = _row_limit("max_rows")
    max_rows_grad = _row_limit("max_rows_grad")
    max_rows_backward = _row_limit("max_rows_backward")

    def size_for(self, x: Tensor) -> None:
        """Size the row limits for inputs like `x` on their device, once (a no-op on a CPU)."""
        if not self._sized:
            self._limits = row_limits(self.posterior, x)
            self._sized = True

    def train(self, mode: bool = True) -> StochasticEnsemble:
        self.training = mode  # deliberately not recursive: see the class docstring
        return self

    def sample_logits(self, x: Tensor, k: int | None = None) -> Tensor:
        """`[K, B, C]` logits of K fresh samples, evaluated in pieces of at most `max_rows` K·B rows.

        With gradients (an attack step) the batch is split into micro-batches of K·b <= `max_rows_grad` rows,
        each with its own fresh samples: on a 2-core CPU a vmap over 20 sampled LeNets ran 1.35x faster at
        640 rows than at 2,560, and shared-trunk posteriors (MC dropout) are unaffected. Posteriors with
        `chunk_samples` (bbb: drawing K weight sets is itself costly) split K instead: chunks of
        `max_rows_grad // B` samples on the whole batch, so each step draws its K samples once. Without gradients
        (evaluation with large K) K is split instead, so shared layers still run once per chunk.
        """
        self.size_for(x)
        k = self.k if k is None else k
        batch = x.shape[0]
        if torch.is_grad_enabled():
            if k * batch <= self.max_rows_grad:
                return self.posterior.logits(x, k, self.generator)
            if self.posterior.chunk_samples:
                if batch > self.max_rows_grad:  # even one sample is too many rows: split the batch as well
                    step = self.max_rows_grad
                    return torch.cat(
                        [self.sample_logits(x[i : i + step], k) for i in range(0, batch, step)], dim=1
                    )
                step = max(1, self.max_rows_grad // batch)
                return torch.cat(
                    [self.posterior.logits(x, min(step, k - i), self.generator) for i in range(0, k, step)]
                )
            if batch == 1:
                return self.posterior.logits(x, k, self.generator)
            step = max(1, self.max_rows_grad // k)
            parts = [self.posterior.logits(x[i : i + step], k, self.generator) for i in range(0, batch, step)]
            return torch.cat(parts, dim=1)
        if k * batch <= self.max_rows:
            return self.posterior.logits(x, k, self.generator)
        step = max(1, self.max_rows // max(1, batch))
        return torch.cat(
            [self.posterior.logits(x, min(step, k - i), self.generator) for i in range(0, k, step)]
        )

    def gradient_pieces(self, batch: int) -> list[slice]:
        """Slices of a batch that `loss_gradient` differentiates one at a time, so that an attack's memory stays
        bounded as K grows (a forward pass in pieces alone would keep every piece's graph until the backward).

        Each piece is a whole number of `sample_logits`' micro-batches, so the samples drawn, and the gradient up
        to float rounding, are those of one graph over the whole batch.
        """
        k = self.k
        if k * batch <= self.max_rows_backward:
            return [slice(0, batch)]
        if self.posterior.chunk_samples:
            piece = max(1, self.max_rows_backward // k)
        else:
            step = max(1, self.max_rows_grad // k)
            piece = step * max(1, self.max_rows_backward // (step * k))
        return [slice(i, min(i + piece, batch)) for i in range(0, batch, piece)]

    def forward(self, x: Tensor) -> Tensor:
        return log_predictive(self.sample_logits(x))


class DifferenceLogitsRatio(nn.Module):
    """DLR loss (Croce & Hein 2020): -(z_y - max_{i≠y} z_i) / (z_π1 - z_π3), on index labels `[B]`.

    Shift-invariant, so it gives the same value on logits and on log-probabilities. Vectorised (ART's own is a
    Python loop over examples). `reduction` is an attribute because ART's `compute_loss` sets it.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        if y.ndim == 2:
            y = y.argmax(dim=1)
        z_sorted, _ = z.sort(dim=1, descending=True)
        z_y = z.gather(1, y[:, None]).squeeze(1)
        z_other = z.scatter(1, y[:, None], -math.inf).amax(dim=1)
        loss = -(z_y - z_other) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)
        return _reduce(loss, self.reduction)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction '{reduction}'")


def _tensor(x: np.ndarray | Tensor) -> Tensor:
    """ART hands over numpy arrays (FGSM) or tensors (PGD's torch path)."""
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def _art_classifier_class() -> type:
    from art.estimators.classification import PyTorchClassifier

    class StochasticClassifier(PyTorchClassifier):
        """ART estimator around a `StochasticEnsemble`; `eot` picks the EOT gradient estimator."""

        def __init__(self, ensemble: StochasticEnsemble, eot: EotMode, loss: nn.Module, **kwargs: Any):
            super().__init__(model=ensemble, loss=loss, **kwargs)
            self.ensemble = ensemble
            self.eot = EotMode(eot)

        def _per_sample_loss(self, x: Tensor, y: Tensor, reduction: str) -> Tensor:
            """mean_k loss(log_softmax(f_k(x)), y), reduced over the batch as asked."""
            logits = self.ensemble.sample_logits(x)
            k, b = logits.shape[:2]
            previous = self._loss.reduction
            self._loss.reduction = "none"
            try:
                per = self._loss(torch.log_softmax(logits, dim=-1).flatten(0, 1), y.repeat(k))
            finally:
                self._loss.reduction = previous
            return _reduce(per.view(k, b).mean(dim=0), reduction)

        def _labels(self, y: np.ndarray | Tensor) -> Tensor:
            if isinstance(y, np.ndarray):
                y = torch.from_numpy(y)
            y = y.to(self._device)
            return y.argmax(dim=1) if y.ndim == 2 else y.long()

        def _summed_loss(self, x: Tensor, y: Tensor) -> Tensor:
            """The attack loss of a piece of the batch, summed over its examples."""
            if self.eot is EotMode.MEAN_LOSS:
                return self._per_sample_loss(x, y, "sum")
            previous = self._loss.reduction
            self._loss.reduction = "sum"
            try:
                return self._loss(self.ensemble(x), y)
            finally:
                self._loss.reduction = previous

        def loss_gradient(self, x: np.ndarray | Tensor, y: np.ndarray | Tensor, training_mode: bool = False,
                          **kwargs: Any) -> np.ndarray | Tensor:  # fmt: skip
            """Gradient of the batch-mean attack loss w.r.t. `x`, one backward pass per `gradient_pieces` slice
            (memory bounded in K); input gradients only, so weight gradients are never computed. Equals ART's
            `PyTorchClassifier.loss_gradient` (one graph, mean loss) up to float rounding (tested)."""
            as_numpy = isinstance(x, np.ndarray)
            x_t = _tensor(x).to(self._device)
            labels = self._labels(y)
            grads = []
            self.ensemble.size_for(x_t)
            with torch.enable_grad():
                for piece in self.ensemble.gradient_pieces(len(x_t)):
                    x_grad = x_t[piece].detach().clone().requires_grad_(True)
                    (grad,) = torch.autograd.grad(self._summed_loss(x_grad, labels[piece]), x_grad)
                    grads.append(grad)
            total = (grads[0] if len(grads) == 1 else torch.cat(grads)) / len(x_t)
            return total.cpu().numpy() if as_numpy else total

        def compute_loss(self, x: np.ndarray | Tensor, y: np.ndarray | Tensor, reduction: str = "none",
                         **kwargs: Any) -> np.ndarray | Tensor:  # fmt: skip
            if self.eot is EotMode.BMA:
                return super().compute_loss(x, y, reduction=reduction, **kwargs)
            as_numpy = isinstance(x, np.ndarray)
            x_t = _tensor(x).to(self._device)
            with torch.no_grad():
                loss = self._per_sample_loss(x_t, self._labels(y), reduction)
            return loss.cpu().numpy() if as_numpy else loss

    return StochasticClassifier


_CLASSIFIER: type | None = None


def art_classifier(
    ensemble: StochasticEnsemble,
    eot: EotMode | str = EotMode.BMA,
    loss: nn.Module | None = None,
    input_shape: tuple[int, ...] | None = None,
    nb_classes: int | None = None,
) -> Any:
    """ART's `PyTorchClassifier` (subclass `StochasticClassifier`) around `ensemble`.

    Args:
        ensemble: the stochastic ensemble, on the device the attack runs on.
        eot: `bma` or `mean-loss` (module docstring).
        loss: the attack loss on the ensemble's outputs; default cross-entropy (= NLL of log p̄).
        input_shape, nb_classes: default from the posterior's primary net on a probe input when omitted.
    """
    global _CLASSIFIER
    if _CLASSIFIER is None:
        _CLASSIFIER = _art_classifier_class()
    device = ensemble.posterior.device
    if input_shape is None or nb_classes is None:
        raise ValueError("art_classifier needs input_shape and nb_classes")
    return _CLASSIFIER(
        ensemble,
        EotMode(eot),
        loss if loss is not None else nn.CrossEntropyLoss(),
        input_shape=tuple(input_shape),
        nb_classes=nb_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


__all__ = [
    "DifferenceLogitsRatio",
    "EotMode",
    "StochasticEnsemble",
    "art_classifier",
]
