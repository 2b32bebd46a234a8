"""Recipes (`defenses/*.toml`): validated settings that fully describe how a model is built and trained.

Every table rejects unknown keys and wrong types when loaded (a typo must not silently fall back to a
default), and a `ConfigError` names the offending key, the bad value and the fix on one line
(`robusthyper.settings`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from robusthyper.errors import ConfigError, UserError
from robusthyper.nets import NetSpec
from robusthyper.settings import StrictModel, available_tomls, find_toml, format_validation_error, read_toml

RECIPE_DIRNAME = "defenses"


class TrainSpec(StrictModel):
    """The variational-inference training loop (`robusthyper.train.fit`)."""

    epochs: int = Field(20, ge=0)
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["adam", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(10.0, gt=0)
    """Total-norm gradient clipping (BHN's code used 10); none to disable."""
    kl_weight: float = Field(1.0, ge=0)
    """beta in NLL + beta * KL / N; 1 is the ELBO, < 1 a tempered posterior (say so in reports)."""
    kl_anneal_delay: int = Field(0, ge=0)
    """Epochs with the KL term off before the ramp starts (BbH: 5)."""
    kl_anneal_epochs: int = Field(0, ge=0)
    """Epochs of the linear ramp from 0 to kl_weight (0: no annealing)."""
    train_samples: int = Field(1, gt=0)
    """Posterior samples per training step (all examples of the step share each sample)."""
    eval_samples: int = Field(32, gt=0)
    """K for the final test accuracy."""
    val_samples: int = Field(8, gt=0)
    """K for the per-epoch validation accuracy (a progress signal, so cheaper than eval_samples)."""
    val_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of the training split held out for per-epoch validation accuracy."""


class Recipe(StrictModel):
    """A defence: which posterior on which net, trained how, on which data."""

    name: str
    description: str = ""
    dataset: str = "mnist5k"
    seed: int = 0
    net: NetSpec = NetSpec()
    posterior: dict[str, Any]
    """`kind` (a registered posterior) plus that posterior's options, validated by its `Options` model."""
    train: TrainSpec = TrainSpec()

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, name: str) -> str:
        from robusthyper.data import parse_dataset_name

        try:
            return parse_dataset_name(name).value
        except UserError as err:
            raise ValueError(str(err)) from None

    @field_validator("posterior")
    @classmethod
    def _check_posterior(cls, table: dict[str, Any]) -> dict[str, Any]:
        from robusthyper.posteriors import posterior_options

        posterior_options(table)  # raises a ValueError naming the bad key
        return table

    @property
    def posterior_kind(self) -> str:
        return str(self.posterior["kind"])


def available_recipes() -> list[str]:
    return available_tomls(RECIPE_DIRNAME)


def parse_recipe(data: dict[str, Any], source: str, default_name: str) -> Recipe:
    data = {"name": default_name, **data}
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_recipe(name_or_path: str) -> Recipe:
    """Load and validate a recipe by name (`defenses/<name>.toml`) or path."""
    path = find_toml(name_or_path, RECIPE_DIRNAME, "recipe")
    return parse_recipe(read_toml(path), str(path), path.stem)
