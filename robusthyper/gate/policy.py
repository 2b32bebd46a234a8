"""`GatePolicy`: the rules a CI gate checks and, optionally, the evaluation that produces their numbers.

A policy is a TOML file (`robusthyper gate --policy robustness.toml`) or the `[tool.robusthyper.gate]` table of
a `pyproject.toml`. Every table rejects unknown keys; a mistake ends in one line naming the key and the fix.

    description = "bbh must stay robust"

    [evaluate]                      # what `robusthyper gate` runs when no --results is given
    models = ["bbh"]                # recipe names (latest checkpoint), checkpoint folders, module:factory
    n = 500                         # the first n test examples
    seeds = [0]                     # one run per seed; a rule must hold for every seed
    k_attack = [20]                 # optional: overrides every attack's K_attack (one run per value)
    k_eval = 100                    # optional: overrides every attack's K_eval
    executor = "local"              # optional: "ray" runs each cell as a Ray task (also address,
                                    # cpus_per_cell, gpus_per_cell; the gate's --executor ... override them)
    [[evaluate.attacks]]            # AttackSpec fields (eps may be a list), or preset = "pgd-eot"
    attack = "pgd"
    eps = [0, 0.1]
    steps = 40

    [[rules]]
    model = "bbh"
    attack = "pgd"                  # an attack name (any steps) or a results label such as "pgd-40"
    eps = 0.1
    metric = "accuracy"             # default; input = "adversarial" (default) or "clean"; also
                                    # detection_auroc_entropy / _mi, ood_auroc_entropy / _mi, nll, ...
    min = 0.40                      # or max = ..., max_drop = ... (needs --baseline), max_rise = ...
    bound = "lower"                 # compare the Wilson 95% lower bound (default: the point estimate)

    [[rules]]                       # required sanity checks: fail on any flag of robusthyper.sanity
    type = "no-flags"
    flags = ["zero-gradients", "square-stronger"]   # optional; default: every kind (FLAG_CODES)
    models = ["bbh"]                # optional; default: every model
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from robusthyper.errors import ConfigError, UserError
from robusthyper.run import schema as s
from robusthyper.settings import StrictModel, format_validation_error, read_toml

PYPROJECT_TABLE = ("tool", "robusthyper", "gate")
DEFAULT_POLICY = "robustness.toml"

PROPORTION_METRICS = ("accuracy",)
"""Metrics that are a share of the n examples: they get a Wilson interval and thresholds in [0, 1]."""
AUROC_SUFFIX = "auroc"
"""Metrics whose name contains this are AUROCs: thresholds in [0, 1], no interval."""


FLAG_CODES: tuple[str, ...] = (
    "non-monotone",
    "not-near-zero",
    "iterative-weaker-than-fgsm",
    "square-stronger",
    "eot-not-converged",
    "zero-gradients",
    "nonfinite-gradients",
)
"""Every code a `robusthyper.sanity.Flag` can carry (kept here so that reading a policy needs no torch;
tests/test_gate.py checks it against sanity.py)."""
THRESHOLD = "threshold"
NO_FLAGS = "no-flags"
RULE_TYPES = (THRESHOLD, NO_FLAGS)

Kind = Literal["min", "max", "max_drop", "max_rise"]
KINDS: tuple[str, ...] = ("min", "max", "max_drop", "max_rise")
Bound = Literal["estimate", "lower", "upper"]


def is_proportion(metric: str) -> bool:
    return metric in PROPORTION_METRICS or metric.endswith("_accuracy")


def is_unit_interval(metric: str) -> bool:
    return is_proportion(metric) or AUROC_SUFFIX in metric


def _eps(value: Any) -> float | None:
    from robusthyper.attacks.spec import parse_eps

    return None if value is None else parse_eps(value)


class Rule(StrictModel):
    """One threshold on one metric at a (model, attack, eps). Exactly one of min, max, max_drop, max_rise.

    When several rows of the results match (several seeds, K values or EOT modes), the rule must hold for
    every one of them: the worst row is reported.
    """

    type: str = THRESHOLD
    """'threshold' (the default); 'no-flags' is a `FlagRule`."""
    name: str | None = None
    """Shown in the table and as the JUnit test case name (default: built from the other keys)."""
    model: str
    attack: str | None = None
    """An attack name ('pgd' matches 'pgd-40'), a results label ('pgd-40', 'worst-case'); none: every attack."""
    eps: float | None = None
    """A number or a fraction such as "8/255"; none: every eps."""
    input: str | None = None
    """'clean' or 'adversarial' (the default where the metric has adversarial rows), or an OOD set's name
    for the sweep's OOD rows (none: every OOD set)."""
    metric: str = "accuracy"
    min: float | None = None
    """The metric must be at least this."""
    max: float | None = None
    """The metric must be at most this."""
    max_drop: float | None = Field(None, ge=0)
    """The metric may fall by at most this (absolute) against the --baseline results."""
    max_rise: float | None = Field(None, ge=0)
    """The metric may rise by at most this (absolute) against the --baseline results (NLL, entropy)."""
    bound: Bound = "estimate"
    """Which statistic meets the threshold: the point estimate, or the Wilson 95% interval's lower or upper
    bound. For a minimum, 'lower' passes only when confidently above; 'upper' fails only when confidently
    below (no flapping on noise)."""
    norm: str | None = None
    eot: str | None = None
    k_attack: int | None = None
    k_eval: int | None = None
    seed: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, dict) and "eps" in data:
            data = {**data, "eps": _eps(data["eps"])}
        return data

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in RULE_TYPES:
            raise ValueError(f"unknown rule type {value!r}; known: {', '.join(RULE_TYPES)}")
        return value

    @field_validator("metric", "model")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            have = f"got {', '.join(given)}" if given else "got none"
            raise ValueError(f"a rule needs exactly one of min, max, max_drop, max_rise ({have})")
        threshold = float(getattr(self, given[0]))
        if not math.isfinite(threshold):
            raise ValueError(f"{given[0]} = {threshold} is not finite")
        if is_unit_interval(self.metric) and not 0 <= threshold <= 1:
            raise ValueError(
                f"{given[0]} = {threshold:g} is outside [0, 1] for metric '{self.metric}' (a share, not a percent)"
            )
        if self.bound != "estimate" and not is_proportion(self.metric):
            raise ValueError(
                f"bound = '{self.bound}' needs an accuracy metric (a Wilson interval); '{self.metric}' has none"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def threshold(self) -> float:
        return float(getattr(self, self.kind))

    @property
    def needs_baseline(self) -> bool:
        return self.kind in ("max_drop", "max_rise")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        where = [self.model, self.input if self.input in (s.CLEAN, s.OOD) else (self.attack or "")]
        where = [w for w in where if w]
        if self.eps is not None:
            where.append(f"eps={self.eps:g}")
        where += [f"{k}={getattr(self, k)}" for k in ("norm", "eot", "k_attack", "k_eval", "seed")
                  if getattr(self, k) is not None]  # fmt: skip
        op = {"min": ">=", "max": "<=", "max_drop": "drop <=", "max_rise": "rise <="}[self.kind]
        stat = "" if self.bound == "estimate" else f" ({self.bound} bound)"
        return f"{' '.join(where)}: {self.metric}{stat} {op} {self.threshold:g}"


class FlagRule(StrictModel):
    """`type = "no-flags"`: fails when the checked run raised any of `flags` (default: every kind) for any of
    `models` (default: every model). The flags are the run's sanity flags (`robusthyper.sanity`, written to
    flags.csv by `robusthyper sweep`, `attack` and the gate's own evaluation): masked or non-finite input
    gradients, Square beating the gradient attacks, non-monotone curves, unconverged EOT, ..."""

    type: Literal["no-flags"]
    name: str | None = None
    """Shown in the table and as the JUnit test case name (default: built from the other keys)."""
    flags: list[str] | None = Field(None, min_length=1)
    """Flag codes (`FLAG_CODES`); none: every kind."""
    models: list[str] | None = Field(None, min_length=1)
    """Model names; none: every model of the run."""

    @field_validator("flags")
    @classmethod
    def _known_flags(cls, value: list[str] | None) -> list[str] | None:
        unknown = [code for code in value or [] if code not in FLAG_CODES]
        if unknown:
            raise ValueError(f"unknown sanity flag {unknown[0]!r}; known: {', '.join(FLAG_CODES)}")
        return value

    @field_validator("models")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not name.strip() for name in value):
            raise ValueError("model names must not be empty")
        return None if value is None else [name.strip() for name in value]

    # What the rules table and the JSON show for this rule: the count of matching flags, which must be 0.
    kind: ClassVar[str] = "max"
    metric: ClassVar[str] = "sanity_flags"
    bound: ClassVar[str] = "estimate"
    threshold: ClassVar[float] = 0.0
    needs_baseline: ClassVar[bool] = False

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(self.flags) if self.flags else FLAG_CODES

    @property
    def model(self) -> str:
        """For the JUnit test case's class name: the models, or 'sanity' for every model."""
        return "+".join(self.models) if self.models else "sanity"

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        what = ", ".join(self.flags) if self.flags else "any kind"
        where = f" on {', '.join(self.models)}" if self.models else ""
        return f"no sanity flags ({what}){where}"


def _rule_type(value: Any) -> str:
    kind = value.get("type", THRESHOLD) if isinstance(value, dict) else getattr(value, "type", THRESHOLD)
    return NO_FLAGS if kind == NO_FLAGS else THRESHOLD


AnyRule = Annotated[
    Annotated[Rule, Tag(THRESHOLD)] | Annotated[FlagRule, Tag(NO_FLAGS)], Discriminator(_rule_type)
]


class Evaluation(StrictModel):
    """What to evaluate when the gate runs the evaluation itself."""

    models: list[str] = Field(min_length=1)
    attacks: list[dict[str, Any]] = Field(min_length=1)
    """Each table: `AttackSpec` keys (eps may be a list), or `preset = "<name or path>"` plus overrides."""
    dataset: str | None = None
    """For module:factory models (checkpoints carry their own)."""
    n: int = Field(1000, gt=0)
    seeds: list[int] = Field([0], min_length=1)
    k_attack: list[int] | None = Field(None, min_length=1)
    k_eval: int | None = Field(None, gt=0)
    batch_size: int = Field(128, gt=0)
    ood: bool = False
    """Also compute OOD AUROCs (when the sweep supports it)."""
    executor: Literal["local", "ray"] = "local"
    """Where the cells run (`robusthyper gate --executor` overrides it); the numbers do not depend on it."""
    address: str | None = None
    """With executor = "ray": HOST:PORT, "auto" or "local" (default: a private cluster on 127.0.0.1)."""
    cpus_per_cell: int | None = Field(None, ge=1)
    """With executor = "ray": CPUs (and torch threads) per cell (default 1)."""
    gpus_per_cell: float | None = Field(None, ge=0)
    """With executor = "ray" and a CUDA device: GPUs per cell (default 0)."""

    EXECUTION: ClassVar[tuple[str, ...]] = ("executor", "address", "cpus_per_cell", "gpus_per_cell")
    """The keys that say where cells run, not what they compute: not part of the run folder's name."""


class GatePolicy(StrictModel):
    """The rules, and optionally the evaluation that produces their numbers."""

    description: str = ""
    evaluate: Evaluation | None = None
    rules: list[AnyRule] = Field(min_length=1)

    @property
    def needs_baseline(self) -> bool:
        return any(rule.needs_baseline for rule in self.rules)


def parse_policy(data: dict[str, Any], source: str) -> GatePolicy:
    """Validate a policy table; any mistake is a one-line `ConfigError` naming `source`."""
    try:
        return GatePolicy.model_validate(data)
    except ValidationError as err:
        # _Untagged offers the one method format_validation_error reads, `errors()`, but that function
        # (config.py) is typed to take a ValidationError; a Protocol parameter there would drop this ignore.
        message = format_validation_error(_Untagged(err), source)  # type: ignore[arg-type]
        raise ConfigError(message.replace("[(top level)] ", "")) from None
    except ValueError as err:  # raised by a before-validator (eps parsing)
        raise ConfigError(f"{source}: {err}") from None


class _Untagged:
    """A ValidationError's errors without the rule-type tags pydantic puts in their locations
    ('rules.0.threshold.treshold' -> 'rules.0.treshold'), for `format_validation_error`."""

    def __init__(self, err: ValidationError) -> None:
        self._errors = [{**e, "loc": _untag(e["loc"])} for e in err.errors()]

    def errors(self) -> list[dict[str, Any]]:
        return self._errors


def _untag(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    if len(loc) >= 3 and loc[0] == "rules" and isinstance(loc[1], int) and loc[2] in RULE_TYPES:
        return (*loc[:2], *loc[3:])
    return loc


def load_policy(path: Path | str | None = None, cwd: Path | None = None) -> tuple[GatePolicy, str]:
    """The policy in `path`; without one, `[tool.robusthyper.gate]` of ./pyproject.toml, else
    ./robustness.toml. Returns the policy and where it came from."""
    cwd = cwd or Path.cwd()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"policy file '{path}' does not exist; check the path")
        data = read_toml(path)
        if path.name == "pyproject.toml":
            return _from_pyproject(data, path)
        return parse_policy(data, str(path)), str(path)
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file():
        data = read_toml(pyproject)
        if _table(data) is not None:
            return _from_pyproject(data, pyproject)
    if (cwd / DEFAULT_POLICY).is_file():
        return load_policy(cwd / DEFAULT_POLICY, cwd)
    raise UserError(
        f"no gate policy: pass --policy FILE, add [tool.robusthyper.gate] to pyproject.toml, or write "
        f"./{DEFAULT_POLICY}"
    )


def _table(data: dict[str, Any]) -> Any:
    for key in PYPROJECT_TABLE:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _from_pyproject(data: dict[str, Any], path: Path) -> tuple[GatePolicy, str]:
    table = _table(data)
    source = f"{path} [tool.robusthyper.gate]"
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: no [tool.robusthyper.gate] table; add one or pass --policy FILE")
    return parse_policy(table, source), source
