"""`AttackSpec`: one attack at one eps, validated when built (unknown keys, bad values and eps out of range
are errors), from CLI flags or an `attacks/*.toml` preset. Eps is accepted as a number or a fraction such as
"8/255"; a preset's `eps` and `k_attack` may be lists, expanded into one spec per (eps, K_attack) (`expand`)."""

from __future__ import annotations

import math
from enum import Enum
from fractions import Fraction
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from robusthyper.ensemble import EotMode
from robusthyper.errors import ConfigError, UserError
from robusthyper.settings import StrictModel, format_validation_error


class AttackName(str, Enum):
    """Registered attacks (`robusthyper.attacks.ATTACKS`)."""

    FGSM = "fgsm"
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps."""
    PGD = "pgd"
    """Projected gradient descent (Madry et al. 2018): `steps` steps of `step_size`, random start."""
    APGD_CE = "apgd-ce"
    """Auto-PGD on cross-entropy (Croce & Hein 2020): step size adapted per example."""
    APGD_DLR = "apgd-dlr"
    """Auto-PGD on the difference-of-logits-ratio loss (Croce & Hein 2020)."""
    SQUARE = "square"
    """Square attack (Andriushchenko et al. 2020): gradient-free random search; a gradient-masking check."""
    PGD_ADAPTIVE = "pgd-adaptive"
    """PGD on CE(log p̄, y) - detection_weight * score (MI or entropy): evades uncertainty-based detection."""
    PAPER_BHN_FGSM = "paper-bhn-fgsm"
    """BHN's own (weak) protocol: FGSM from one posterior sample's gradient, no clipping to [0, 1]."""
    PAPER_BBH_FGSM = "paper-bbh-fgsm"
    """BbH's own (weak) protocol: eps * mean of `samples_averaged` single-sample gradient signs, no clipping."""


class Norm(str, Enum):
    """Threat model: the norm bounding the perturbation."""

    LINF = "linf"
    """max_i |delta_i| <= eps (pixels in [0, 1], so eps <= 1)."""
    L2 = "l2"
    """||delta||_2 <= eps."""


DetectionScore = Literal["mi", "entropy"]
"""Uncertainty score used to flag adversarial inputs: mutual information or predictive entropy."""

_NORM_ALIASES = {"linf": "linf", "inf": "linf", "l_inf": "linf", "l2": "l2", "2": "l2"}

# Per attack: default steps, default step size as a multiple of eps (None: not used), default random start.
ATTACK_DEFAULTS: dict[AttackName, tuple[int, float | None, bool]] = {
    AttackName.FGSM: (1, 1.0, False),
    AttackName.PGD: (40, 0.25, True),  # METHODS.md §4: >= 40 steps of eps/4 with a random start
    AttackName.APGD_CE: (100, 2.0, True),  # Croce & Hein: initial step 2 eps, 100 iterations
    AttackName.APGD_DLR: (100, 2.0, True),
    AttackName.SQUARE: (1000, None, True),  # queries; p_init 0.8 as in the paper
    AttackName.PGD_ADAPTIVE: (40, 0.25, True),
    AttackName.PAPER_BHN_FGSM: (1, 1.0, False),
    AttackName.PAPER_BBH_FGSM: (1, 1.0, False),
}
SINGLE_STEP = (AttackName.FGSM, AttackName.PAPER_BHN_FGSM, AttackName.PAPER_BBH_FGSM)
"""Attacks that take one step from x (no steps, no random start)."""
PAPER_PROTOCOLS = {AttackName.PAPER_BHN_FGSM: "paper-bhn", AttackName.PAPER_BBH_FGSM: "paper-bbh"}
"""The papers' own (weak) protocols, replayed for comparison; every other attack is the strong protocol."""


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

    attack: AttackName = AttackName.PGD
    norm: Norm = Norm.LINF
    eps: float
    """Perturbation budget in pixel units ([0, 1] images); 0 evaluates the clean inputs."""
    steps: int = Field(0, gt=0)
    """Iterations (PGD, APGD) or queries (Square); 1 for FGSM. Default per attack."""
    step_size: float | None = Field(None, gt=0)
    """Absolute step size; default per attack as a multiple of eps (PGD eps/4, APGD 2 eps, FGSM eps)."""
    restarts: int = Field(1, gt=0)
    """Independent runs; an example counts as robust only if it survives all of them."""
    random_init: bool = True
    """Start from a uniform random point in the eps-ball (PGD, APGD); FGSM starts at x."""
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
        for key, enum in (("attack", AttackName), ("norm", Norm), ("eot", EotMode)):
            if isinstance(data.get(key), str):
                try:
                    data[key] = enum(data[key])
                except ValueError:
                    known = ", ".join(m.value for m in enum)
                    raise ValueError(f"unknown {key} '{data[key]}'; known: {known}") from None
        if "eps" in data:
            data["eps"] = parse_eps(data["eps"])
        attack = data.get("attack", AttackName.PGD)
        steps, step_factor, random_init = ATTACK_DEFAULTS[attack]
        if attack in SINGLE_STEP:
            data.setdefault("random_init", False)
        if attack in PAPER_PROTOCOLS:
            data.setdefault("clip", False)
            data.setdefault("k_attack", 1)
        if attack is AttackName.PAPER_BBH_FGSM:
            data.setdefault("samples_averaged", 100)
        if attack is AttackName.PGD_ADAPTIVE:
            data.setdefault("detection_weight", 1.0)
        data.setdefault("steps", steps)
        data.setdefault("random_init", random_init)
        if data.get("step_size") is None and step_factor is not None and isinstance(data.get("eps"), float):
            data["step_size"] = step_factor * data["eps"] if data["eps"] > 0 else None
        return data

    @field_validator("eps")
    @classmethod
    def _eps(cls, eps: float) -> float:
        return parse_eps(eps)

    @model_validator(mode="after")
    def _consistent(self) -> AttackSpec:
        if self.norm is Norm.LINF and self.eps > 1:
            raise ValueError(f"eps {self.eps:g} > 1 for the Linf norm on [0, 1] images; use eps <= 1")
        name = "FGSM" if self.attack is AttackName.FGSM else self.attack.value
        if self.attack in SINGLE_STEP and self.steps != 1:
            raise ValueError(f"{name} takes one step; steps={self.steps} (use pgd for several)")
        if self.attack in SINGLE_STEP and self.random_init:
            raise ValueError(f"{name} starts at x; random_init must be false (use pgd for a random start)")
        if not self.clip and self.attack not in PAPER_PROTOCOLS:
            raise ValueError(f"clip = false is only for the papers' protocols, not {self.attack.value}")
        if self.samples_averaged is not None and self.attack is not AttackName.PAPER_BBH_FGSM:
            raise ValueError("samples_averaged applies to paper-bbh-fgsm only")
        own_loop = (AttackName.PGD_ADAPTIVE, *PAPER_PROTOCOLS)
        if self.attack in own_loop and self.norm is not Norm.LINF:
            raise ValueError(f"{self.attack.value} supports norm = linf only")
        if self.detection_weight > 0 and self.attack is not AttackName.PGD_ADAPTIVE:
            raise ValueError(f"detection_weight applies to pgd-adaptive only, not {self.attack.value}")
        if self.restarts > 1 and not self.random_init and self.attack is not AttackName.SQUARE:
            raise ValueError(f"restarts={self.restarts} needs random_init = true (runs would be identical)")
        return self

    @property
    def label(self) -> str:
        """A short name for tables: 'pgd-40', 'fgsm', 'apgd-ce-100', 'square-1000', 'paper-bbh-fgsm'."""
        return self.attack.value if self.attack in SINGLE_STEP else f"{self.attack.value}-{self.steps}"

    @property
    def protocol(self) -> str:
        """'paper-bhn' or 'paper-bbh' for the papers' own (weak) protocols, else 'strong'."""
        return PAPER_PROTOCOLS.get(self.attack, "strong")

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


_NOT_APPLICABLE: dict[AttackName, tuple[str, ...]] = {
    AttackName.FGSM: ("steps", "random_init", "step_size"),
    AttackName.PAPER_BHN_FGSM: ("steps", "random_init", "step_size"),
    AttackName.PAPER_BBH_FGSM: ("steps", "random_init", "step_size"),
    AttackName.SQUARE: ("step_size",),
}


def applicable(attack: str | AttackName, overrides: dict[str, Any]) -> dict[str, Any]:
    """Command-line overrides that apply to `attack`: `--steps 40` with `--attack pgd --attack fgsm` sets
    PGD's steps and leaves FGSM's single step alone (and Square has no step size)."""
    try:
        name = AttackName(str(attack.value if isinstance(attack, AttackName) else attack).lower())
    except ValueError:
        return overrides  # validation names the bad attack
    return {k: v for k, v in overrides.items() if k not in _NOT_APPLICABLE.get(name, ())}
