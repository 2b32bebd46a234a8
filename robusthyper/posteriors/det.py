"""`det`: the deterministic baseline (MAP with optional weight decay). K samples are all the same net."""

from __future__ import annotations

from torch import nn

from robusthyper.posteriors.base import NoOptions, Posterior


class PointEstimate(Posterior):
    """A point estimate: no sampled parameters, KL 0; `logits` returns one evaluation expanded to K."""

    kind = "det"
    Options = NoOptions
    stochastic = False

    def __init__(self, net: nn.Module, options: NoOptions | None = None) -> None:
        super().__init__(net)
