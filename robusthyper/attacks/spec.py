"""`AttackSpec`: one attack at one eps, validated when built (unknown keys, bad values and eps out of range
are errors), from CLI flags or an `attacks/*.toml` preset. Eps is accepted as a number or a fraction such as
"8/255"; a preset's `eps` and `k_attack` may be lists, expanded into one spec per (eps, K_attack) (`expand`).

Every per-attack rule comes from the attack's registered family (`robusthyper.attacks.FAMILIES`): defaults
(steps, step size as a multiple of eps, random start, `spec_defaults`), which settings it accepts (norms,
`clip = false` for paper protocols, ...) and which command-line overrides apply to it (`applicable`).
`Norm` is declared with the families (`robusthyper.attacks.base`) and importable from here as before."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from robusthyper.attacks.base import AttackFamily, Norm, Trait
from robusthyper.attacks.registry import FAMILIES, families_with
from robusthyper.attacks.registry import family as lookup_family
from robusthyper.ensemble import EotMode
from robusthyper.errors import ConfigError, UserError
from robusthyper.settings import StrictModel, format_validation_error

DetectionScore = Literal["mi", "entropy"]
"""Uncertainty score used to flag adversarial inputs: mutual information or predictive entropy."""

_NORM_ALIASES = {"linf": "linf", "inf": "linf", "l_inf": "linf", "l2": "l2", "2": "l2"}


def parse_eps(value: Any) -> float:
    """A perturbation budget from a number or a string such as "0.1" or "8/255"; raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"eps {value!r} is not a number")
    if isinstance(value, int | float):
        eps = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                if float(den) == 0:
                    raise ValueError(f"eps '{value}' divides by zero")
                eps = float(Fraction(num.strip()) / Fraction(den.strip()))
            else:
                eps = float(text)
        except ZeroDivisionError:
            raise ValueError(f"eps '{value}' divides by zero") from None
        except ValueError as err:
            if "divides by zero" in str(err):
                raise
            raise ValueError(f"eps '{value}' is not a number or a fraction such as 8/255") from None
    else:
        raise ValueError(f"eps {value!r} is not a number or a fraction such as 8/255")
    if not math.isfinite(eps):
        raise ValueError(f"eps '{value}' is not finite")
    if eps < 0:
        raise ValueError(f"eps {value} is negative; use eps >= 0")
    return eps


class AttackSpec(StrictModel):
    """One attack at one perturbation budget, with every setting that makes its number reproducible."""

    attack: str = "pgd"
    """A registered attack family's name (`robusthyper.attacks.FAMILIES`)."""
    norm: Norm = Norm.LINF
    eps: float
    """Perturbation budget in pixel units ([0, 1] images); 0 evaluates the clean inputs."""
    steps: int = Field(0, gt=0)
    """Iterations (PGD, APGD) or queries (Square); 1 for single-step attacks. Default: the family's."""
    step_size: float | None = Field(None, gt=0)
    """Absolute step size; default: the family's multiple of eps (`AttackFamily.step_factor`); None for a
    family without a step size (Square) and at eps 0."""
    restarts: int = Field(1, gt=0)
    """Independent runs; an example counts as robust only if it survives all of them."""
    random_init: bool = True
    """Start from a uniform random point in the eps-ball; default: the family's (single steps start at x)."""
    eot: EotMode = EotMode.BMA
    """EOT gradient estimator (robusthyper.ensemble)."""
    k_attack: int = Field(20, gt=0)
    """Posterior samples per attack step (EOT); a point estimate uses 1."""
    k_eval: int = Field(100, gt=0)
    """Posterior samples when evaluating clean and adversarial inputs."""
    seed: int = 0
    detection_weight: float = Field(0.0, ge=0)
    """pgd-adaptive: lambda in CE(log p̄, y) - lambda * score; 0 is plain PGD-EOT."""
    detection_score: DetectionScore = "mi"
    """pgd-adaptive: the detection score the attack lowers, mutual information or predictive entropy."""
    clip: bool = True
    """Clip adversarial inputs to [0, 1]; only the papers' protocols may set false (their code did not clip)."""
    samples_averaged: int | None = Field(None, gt=0)
    """paper-bbh-fgsm: single-sample FGSM signs averaged (BbH: 100)."""

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("attack", "norm", "eot"):
            if isinstance(data.get(key), str):
                text = data[key].strip().lower()
                data[key] = _NORM_ALIASES.get(text, text) if key == "norm" else text
        for key, enum in (("norm", Norm), ("eot", EotMode)):
            if isinstance(data.get(key), str):
                try:
                    data[key] = enum(data[key])
                except ValueError:
                    known = ", ".join(m.value for m in enum)
                    raise ValueError(f"unknown {key} '{data[key]}'; known: {known}") from None
        if "eps" in data:
            data["eps"] = parse_eps(data["eps"])
        data.setdefault("attack", "pgd")
        if not isinstance(data["attack"], str):
            return data  # pydantic names the wrong type
        if data["attack"] not in FAMILIES:
            raise ValueError(f"unknown attack '{data['attack']}'; known: {', '.join(FAMILIES)}")
        fam = FAMILIES[data["attack"]]
        for key, value in fam.spec_defaults.items():
            data.setdefault(key, value)
        data.setdefault("steps", fam.steps)
        data.setdefault("random_init", fam.random_init)
        if (
            data.get("step_size") is None
            and fam.step_factor is not None
            and isinstance(data.get("eps"), float)
        ):
            data["step_size"] = fam.step_factor * data["eps"] if data["eps"] > 0 else None
        return data

    @field_validator("eps")
    @classmethod
    def _eps(cls, eps: float) -> float:
        return parse_eps(eps)

    @model_validator(mode="after")
    def _consistent(self) -> AttackSpec:
        if self.norm is Norm.LINF and self.eps > 1:
            raise ValueError(f"eps {self.eps:g} > 1 for the Linf norm on [0, 1] images; use eps <= 1")
        fam, name = self.family, self.attack
        if fam.is_single_step and self.steps != 1:
            raise ValueError(f"{name} takes one step; steps={self.steps} (use pgd for several)")
        if fam.is_single_step and self.random_init:
            raise ValueError(f"{name} starts at x; random_init must be false (use pgd for a random start)")
        if self.norm not in fam.norms:
            raise ValueError(f"{name} supports norm = {' or '.join(n.value for n in fam.norms)} only")
        if not self.clip and not fam.has(Trait.PAPER_PROTOCOL):
            raise ValueError(f"clip = false is only for the papers' protocols, not {name}")
        if self.samples_averaged is not None and "samples_averaged" not in fam.spec_defaults:
            owners = [n for n, f in FAMILIES.items() if "samples_averaged" in f.spec_defaults]
            raise ValueError(f"samples_averaged applies to {', '.join(owners)} only")
        if self.detection_weight > 0 and not fam.has(Trait.DETECTION_AWARE):
            owners = families_with(Trait.DETECTION_AWARE)
            raise ValueError(f"detection_weight applies to {', '.join(owners)} only, not {name}")
        if self.restarts > 1 and not self.random_init and not fam.has(Trait.GRADIENT_FREE):
            raise ValueError(f"restarts={self.restarts} needs random_init = true (runs would be identical)")
        return self

    @property
    def family(self) -> AttackFamily:
        """The attack's registered family."""
        return lookup_family(self.attack)

    @property
    def label(self) -> str:
        """A short name for tables: 'pgd-40', 'fgsm', 'apgd-ce-100', 'square-1000', 'paper-bbh-fgsm'
        (`robusthyper.attacks.family_of_label` reads it back)."""
        return self.attack if self.family.is_single_step else f"{self.attack}-{self.steps}"

    @property
    def protocol(self) -> str:
        """'paper-bhn' or 'paper-bbh' for the papers' own (weak) protocols, else 'strong' (the family's)."""
        return self.family.protocol

    @property
    def step(self) -> float:
        """The step size, for the families that take one (a `ValueError` for the others and at eps 0)."""
        if self.step_size is None:
            raise ValueError(f"{self.label} at eps={self.eps:g} has no step size")
        return float(self.step_size)

    def settings(self) -> dict[str, Any]:
        """The settings as plain values, for result rows and meta.json."""
        return self.model_dump(mode="json")


def make_spec(source: str = "spec", **values: Any) -> AttackSpec:
    """Build an `AttackSpec`, turning any validation error into a one-line `ConfigError` naming `source`."""
    try:
        return AttackSpec.model_validate(values)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source).replace("[(top level)] ", "")) from None
    except ValueError as err:  # from a before-validator outside pydantic's wrapping
        raise ConfigError(f"{source}: {err}") from None


def _k_grid(value: Any, source: str) -> list[Any]:
    """The K_attack values of a table: a list (an EOT study) or one value (validated by the spec)."""
    if not isinstance(value, list):
        return [value]
    if not value:
        raise ConfigError(f"{source}: the k_attack list is empty; give at least one value (e.g. [1, 5, 20])")
    bad = [k for k in value if isinstance(k, bool) or not isinstance(k, int) or k <= 0]
    if bad:
        raise ConfigError(
            f"{source}: k_attack = {value!r} holds {bad[0]!r}; give positive whole numbers (e.g. [1, 5, 20])"
        )
    return list(dict.fromkeys(value))


def expand(values: dict[str, Any], source: str = "spec") -> list[AttackSpec]:
    """One spec per (eps, K_attack): `values['eps']` may be a list (a preset's eps grid) and so may
    `values['k_attack']` (an EOT convergence study); scalars give one spec. Repeated values and identical
    specs are dropped (the first stays), so overlapping tables never run a cell twice."""
    eps = values.get("eps")
    if eps is None:
        raise UserError(f"{source}: no eps given; pass --eps (e.g. --eps 0.1 or --eps 8/255, repeatable)")
    grid = eps if isinstance(eps, list) else [eps]
    if not grid:
        raise ConfigError(f"{source}: the eps list is empty; give at least one value")
    if "k_attack" not in values:
        return list(dict.fromkeys(make_spec(source, **{**values, "eps": e}) for e in grid))
    ks = _k_grid(values["k_attack"], source)
    specs = (make_spec(source, **{**values, "eps": e, "k_attack": k}) for e in grid for k in ks)
    return list(dict.fromkeys(specs))


_NOT_APPLICABLE_SINGLE_STEP = ("steps", "random_init", "step_size")


def applicable(attack: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Command-line overrides that apply to `attack`: `--steps 40` with `--attack pgd --attack fgsm` sets
    PGD's steps and leaves FGSM's single step alone (and Square has no step size)."""
    fam = FAMILIES.get(str(attack).strip().lower())
    if fam is None:
        return overrides  # validation names the bad attack
    ignored = _NOT_APPLICABLE_SINGLE_STEP if fam.is_single_step else ()
    if fam.step_factor is None:
        ignored = (*ignored, "step_size")
    return {k: v for k, v in overrides.items() if k not in ignored}


__all__ = ["AttackSpec", "DetectionScore", "Norm", "applicable", "expand", "make_spec", "parse_eps"]
