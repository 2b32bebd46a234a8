"""The `Posterior` interface: a distribution over a primary net's parameters that can be sampled K at a time.

A posterior owns its primary net. `sample_params(k, generator)` returns a dict keyed like the net's
`named_parameters()`, each `[K, *shape]` (only the sampled ones; the rest are shared point estimates), and
`logits(x, k, generator)` evaluates K samples in one call through `functional_logits`. Posteriors whose samples
share weights (MC dropout, BHN) override `logits` with faster paths that must equal the plain one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from robusthyper.data import DatasetInfo
from robusthyper.nets import NetSpec, build_net, functional_logits
from robusthyper.settings import StrictModel


class NoOptions(StrictModel):
    """A posterior without options of its own."""


class Posterior(nn.Module):
    """Base class; subclasses set `kind`, `Options`, and implement `sample_params` (and `kl` if any)."""

    kind: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    stochastic: ClassVar[bool] = True
    """False only for a point estimate, whose K samples are all the same."""

    @property
    def chunk_samples(self) -> bool:
        """Where K·B rows are too many for one gradient call (an attack step), split K (each chunk of samples on
        the whole batch) instead of the batch, so that each step draws its K samples once. Split by batch, every
        micro-batch draws its own K samples: for bbb (whole weight sets) that cost ~19% of an attack step, and
        splitting K made its step 1.2x faster (K = 20, 128 images, 2-core CPU). MC dropout, BHN and BbH (scales)
        keep the batch split, measured faster for them (1.5x for BHN): it runs their shared layers once per
        input. Subclasses override it with a class attribute or, where it depends on options, a property."""
        return False

    def __init__(self, net: nn.Module, options: BaseModel | None = None) -> None:
        """`options`: an instance of the subclass's `Options`, which subclasses keep; the base has none."""
        super().__init__()
        self.net = net

    @classmethod
    def build_net(cls, spec: NetSpec, info: DatasetInfo, options: Any) -> nn.Module:
        """The primary net this posterior needs (MC dropout adds dropout, BHN weight normalisation)."""
        return build_net(
            spec.arch, info.input_shape, info.num_classes, info.mean, info.std, widths=spec.widths
        )

    @classmethod
    def from_spec(cls, spec: NetSpec, info: DatasetInfo, options: Any) -> Posterior:
        return cls(cls.build_net(spec, info, options), options)

    def samples(self, k: int) -> int:
        """How many of `k` requested samples are worth drawing: a point estimate has only one. The one place
        that decides K = 1 for a point estimate (the ensemble evaluates that many, a plan records it)."""
        return k if self.stochastic else 1

    def sample_params(self, k: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """K samples of the stochastic parameters, `{name: [K, *shape]}` (empty when none are sampled)."""
        return {}

    def kl(self, params: dict[str, Tensor] | None = None) -> Tensor:
        """KL(q || prior) of the whole posterior (exact, or estimated from `params` when it needs samples)."""
        return torch.zeros((), device=self.device)

    def logits(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """`[K, B, C]` logits of K fresh posterior samples on inputs `x` `[B, ...]`."""
        return functional_logits(self.net, self.sample_params(k, generator), x, k=k, generator=generator)

    def elbo_terms(
        self, x: Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Logits `[K, B, C]` and the KL term, from the same samples (sample-based KL estimators need them)."""
        params = self.sample_params(k, generator)
        return functional_logits(self.net, params, x, k=k, generator=generator), self.kl(params)

    @property
    def device(self) -> torch.device:
        """Where its tensors live; a posterior without any (a user's parameter-free module) is on the CPU."""
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")
