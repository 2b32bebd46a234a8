"""`mcd`: MC dropout (Gal & Ghahramani 2016). Dropout masks are the posterior samples and stay on in eval."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import nn

from robusthyper.data import DatasetInfo
from robusthyper.nets import NetSpec, build_net
from robusthyper.posteriors.base import Posterior
from robusthyper.settings import StrictModel


class MCDropoutOptions(StrictModel):
    p: float = Field(0.5, gt=0, lt=1)
    """Drop probability, at training and at test time (the papers' baseline: 0.5)."""


class MCDropout(Posterior):
    """Weights are shared point estimates; K samples are K dropout masks.

    `functional_logits` runs the layers before the first dropout once per input and the rest as one K*B
    batch, so the LeNet trunk costs one pass however large K is.
    """

    kind = "mcd"
    Options = MCDropoutOptions

    def __init__(self, net: nn.Module, options: MCDropoutOptions | None = None) -> None:
        super().__init__(net)
        self.options = options or MCDropoutOptions()

    @classmethod
    def build_net(cls, spec: NetSpec, info: DatasetInfo, options: Any) -> nn.Module:
        return build_net(
            spec.arch, info.input_shape, info.num_classes, info.mean, info.std,
            widths=spec.widths, dropout=options.p,
        )  # fmt: skip
