"""Registry of posteriors: names (str-Enum) to classes. Add a posterior by adding a file and a line here."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from robusthyper.data import DatasetInfo
from robusthyper.posteriors.base import Posterior
from robusthyper.posteriors.bbb import BayesByBackprop
from robusthyper.posteriors.bbh import BayesByHypernet
from robusthyper.posteriors.bhn import BayesianHypernetwork
from robusthyper.posteriors.det import PointEstimate
from robusthyper.posteriors.mcd import MCDropout

if TYPE_CHECKING:  # a recipe validates its posterior table here, so config imports this package
    from robusthyper.config import Recipe


class PosteriorKind(str, Enum):
    """Registered posteriors."""

    DET = "det"
    """Deterministic point estimate (MAP)."""
    MCD = "mcd"
    """MC dropout: dropout masks as posterior samples."""
    BBB = "bbb"
    """Bayes by Backprop: mean-field Gaussian over every weight."""
    BHN = "bhn"
    """Bayesian hypernetwork: a normalizing flow over the weight-norm scales."""
    BBH = "bbh"
    """Bayes by Hypernet: generator MLPs of the weights (or scales), kNN KL estimate."""


POSTERIORS: dict[PosteriorKind, type[Posterior]] = {
    PosteriorKind.DET: PointEstimate,
    PosteriorKind.MCD: MCDropout,
    PosteriorKind.BBB: BayesByBackprop,
    PosteriorKind.BHN: BayesianHypernetwork,
    PosteriorKind.BBH: BayesByHypernet,
}


def posterior_class(kind: str) -> type[Posterior]:
    try:
        return POSTERIORS[PosteriorKind(kind)]
    except ValueError:
        known = ", ".join(k.value for k in PosteriorKind)
        raise ValueError(f"unknown posterior kind '{kind}'; known: {known}") from None


def posterior_options(table: dict[str, Any]) -> BaseModel:
    """Validate a recipe's `[posterior]` table: `kind` plus that posterior's own options."""
    if "kind" not in table:
        raise ValueError("the [posterior] table needs a 'kind' (e.g. kind = \"bbb\")")
    cls = posterior_class(table["kind"])
    options = {k: v for k, v in table.items() if k != "kind"}
    try:
        return cls.Options.model_validate(options)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ValueError(f"unknown key '{loc}' for posterior '{cls.kind}'") from None
        raise ValueError(f"'{loc}' = {first.get('input')!r}: {first['msg']}") from None


def build_posterior(recipe: Recipe, info: DatasetInfo) -> Posterior:
    """A freshly initialised posterior as a recipe describes it (seed torch first for reproducible init)."""
    cls = posterior_class(recipe.posterior_kind)
    return cls.from_spec(recipe.net, info, posterior_options(recipe.posterior))


__all__ = [
    "POSTERIORS",
    "Posterior",
    "build_posterior",
    "PosteriorKind",
    "posterior_class",
    "posterior_options",
]
