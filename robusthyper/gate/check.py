"""The pure part of the gate: `check(results, policy) -> list[Violation]`.

`evaluate_rules` finds each rule's rows in a tidy results table (`robusthyper.evaluate.run`), attaches a
Wilson 95% interval to every accuracy (over the row's n examples), compares the chosen statistic with the
threshold, and returns one `RuleResult` per rule. A rule naming a model, attack, eps or metric that the table
does not hold, or a baseline that cannot be compared, is a `UserError` (exit 2): a gate must never pass
because it checked nothing.

A `no-flags` rule (`FlagRule`) reads the run's sanity flags instead (flags.csv, `robusthyper.sanity`): it
fails when any flag of its kinds names one of its models, and lists each (code, model, attack, eps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from robusthyper.errors import UserError
from robusthyper.gate.policy import DETECTION_METRICS, FlagRule, GatePolicy, Rule, is_proportion
from robusthyper.gate.stats import newcombe, wilson

REQUIRED = ("model", "attack", "eps", "input", "metric", "value")
SETTINGS = ("dataset", "n", "norm", "eot", "k_attack", "k_eval", "seed")
FILTERS = ("norm", "eot", "k_attack", "k_eval", "seed")
EPS_TOLERANCE = 1e-6
FLAG_COLUMNS = ("code", "model", "attack", "eps")
"""Columns of a sanity flags table (flags.csv) that a no-flags rule needs; also severity and message."""
SHOWN_FLAGS = 5
"""How many flags a failing no-flags rule's one-line message lists (JUnit and JSON carry all)."""


class GateInputError(UserError):
    """A policy that does not fit the results it checks, or an incomparable baseline."""


@dataclass(frozen=True)
class RuleResult:
    """One rule, checked: the worst matching row's value, its interval, the statistic compared, pass/fail."""

    rule: Rule | FlagRule
    passed: bool
    value: float
    """The metric (min, max) or its change against the baseline (max_drop: baseline - now; max_rise)."""
    low: float | None
    high: float | None
    statistic: float
    threshold: float
    n: int | None
    rows: int
    """How many rows of the results the rule matched (it must hold for each)."""
    current: float | None = None
    baseline: float | None = None
    where: dict[str, Any] = field(default_factory=dict)
    """The worst row's attack, eps and settings."""
    flags: tuple[dict[str, Any], ...] = ()
    """A no-flags rule: the matching flags (code, severity, model, attack, eps, message)."""

    @property
    def name(self) -> str:
        return self.rule.label

    def message(self) -> str:
        if isinstance(self.rule, FlagRule):
            return self._flags_message()
        what = {"max_drop": "drop", "max_rise": "rise"}.get(self.rule.kind, self.rule.metric)
        interval = f" [95% CI {self.low:.4f}, {self.high:.4f}]" if self.low is not None else ""
        stat = "" if self.rule.bound == "estimate" else f"; {self.rule.bound} bound {self.statistic:.4f}"
        base = f" (now {self.current:.4f}, baseline {self.baseline:.4f})" if self.baseline is not None else ""
        op = ">=" if self.rule.kind == "min" else "<="
        verdict = "passes" if self.passed else "FAILS"
        at = ", ".join(f"{k}={_fmt(v)}" for k, v in self.where.items())
        n = f", n={self.n}" if self.n is not None else ""
        return (f"{what} {self.value:.4f}{interval}{base}{stat} {verdict} {op} {self.threshold:g} "
                f"({at}{n}; {self.rows} row{'s' if self.rows != 1 else ''})")  # fmt: skip

    def _flags_message(self) -> str:
        assert isinstance(self.rule, FlagRule)
        models = ", ".join(self.rule.models) if self.rule.models else "every model"
        kinds = ", ".join(self.rule.flags) if self.rule.flags else f"all {len(self.rule.codes)} kinds"
        if self.passed:
            other = f"; {self.rows} flag(s) of other kinds or models in the run" if self.rows else ""
            return f"no sanity flags ({kinds}) on {models}: passes{other}"
        shown = "; ".join(f"{f['code']} ({f['model']}, {f['attack']}, eps={_fmt(f['eps'])})"
                          for f in self.flags[:SHOWN_FLAGS])  # fmt: skip
        more = f"; and {len(self.flags) - SHOWN_FLAGS} more" if len(self.flags) > SHOWN_FLAGS else ""
        return f"{len(self.flags)} sanity flag(s) where none are allowed ({kinds}) FAILS: {shown}{more}"

    def to_dict(self) -> dict[str, Any]:
        if isinstance(self.rule, FlagRule):
            return {
                "name": self.name, "passed": self.passed, "kind": self.rule.type, "metric": self.rule.metric,
                "model": None if self.rule.models is None else list(self.rule.models),
                "flags_checked": list(self.rule.codes), "value": self.value, "threshold": self.threshold,
                "rows": self.rows, "flags": [{k: _plain(v) for k, v in f.items()} for f in self.flags],
                "message": self.message(),
            }  # fmt: skip
        return {
            "name": self.name, "passed": self.passed, "kind": self.rule.kind, "metric": self.rule.metric,
            "model": self.rule.model, "value": self.value, "ci_low": self.low, "ci_high": self.high,
            "bound": self.rule.bound, "statistic": self.statistic, "threshold": self.threshold, "n": self.n,
            "rows": self.rows, "current": self.current, "baseline": self.baseline,
            "where": {k: _plain(v) for k, v in self.where.items()}, "message": self.message(),
        }  # fmt: skip


@dataclass(frozen=True)
class Violation:
    """A rule that failed, with its one-line explanation."""

    rule: str
    message: str
    result: RuleResult


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plain(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2**53 else value


# ---------------------------------------------------------------------------------------------- tables


def prepare(results: pd.DataFrame, what: str = "results") -> pd.DataFrame:
    """Check a results table's schema and normalise its types; an incompatible table is a GateInputError."""
    missing = [c for c in REQUIRED if c not in results.columns]
    if missing:
        raise GateInputError(
            f"the {what} table lacks column(s) {', '.join(missing)}: not a robusthyper results table "
            "(or an incompatible schema); re-run the evaluation with this robusthyper"
        )
    if results.empty:
        raise GateInputError(f"the {what} table holds no rows")
    frame = results.copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame["eps"] = pd.to_numeric(frame["eps"], errors="coerce")
    for column in ("model", "attack", "input", "metric"):
        frame[column] = frame[column].astype(str)
    return frame


def with_detection(results: pd.DataFrame, examples: pd.DataFrame | None) -> pd.DataFrame:
    """Add `detection_auroc_entropy` and `detection_auroc_mi` rows (clean inputs negative, adversarial
    positive, per model, attack and eps) computed from the per-example table, unless the results hold them."""
    if examples is None or examples.empty or all(m in set(results["metric"]) for m in DETECTION_METRICS):
        return results
    need = ("model", "attack", "eps", "clean_entropy", "adv_entropy", "clean_mi", "adv_mi")
    if any(c not in examples.columns for c in need):
        return results
    from sklearn.metrics import roc_auc_score

    keys = [c for c in ("model", "attack", "norm", "eps", "k_eval", "seed") if c in examples.columns]
    datasets = results["dataset"].dropna().unique() if "dataset" in results else []
    rows = []
    for key, group in examples.groupby(keys, sort=False, dropna=False):
        info = dict(zip(keys, key, strict=True))
        info["model"], info["attack"] = str(info["model"]), str(info["attack"])
        truth = np.r_[np.zeros(len(group)), np.ones(len(group))]
        for metric, (neg, pos) in zip(DETECTION_METRICS, [("clean_entropy", "adv_entropy"),
                                                          ("clean_mi", "adv_mi")], strict=True):  # fmt: skip
            scores = np.r_[group[neg].to_numpy(float), group[pos].to_numpy(float)]
            value = float(roc_auc_score(truth, scores)) if np.isfinite(scores).all() else math.nan
            rows.append({**info, "input": "adversarial", "metric": metric, "value": value, "n": len(group),
                         **({"dataset": datasets[0]} if len(datasets) == 1 else {})})  # fmt: skip
    present = set(results["metric"])
    derived = pd.DataFrame([r for r in rows if r["metric"] not in present])
    return pd.concat([results, derived], ignore_index=True) if len(derived) else results


def check_comparable(results: pd.DataFrame, baseline: pd.DataFrame) -> None:
    """A baseline must share the results' schema (the same columns) and dataset."""
    ours, theirs = set(results.columns), set(baseline.columns)
    if ours != theirs:
        diff = sorted(ours ^ theirs)
        raise GateInputError(
            f"the baseline has a different schema from the results (columns differ: {', '.join(diff[:6])}); "
            "re-run the baseline with this robusthyper"
        )
    if "dataset" in ours:
        a, b = sorted(map(str, results["dataset"].unique())), sorted(map(str, baseline["dataset"].unique()))
        if a != b:
            raise GateInputError(
                f"the baseline was evaluated on {', '.join(b)} but the results on {', '.join(a)}; "
                "compare runs on the same dataset"
            )


# ---------------------------------------------------------------------------------------------- matching


def _attack_matches(labels: pd.Series, attack: str) -> pd.Series:
    """'pgd' matches 'pgd-40' and 'pgd-10' (an attack name), 'pgd-40' only itself (a label)."""
    from robusthyper.attacks import family_of_label

    want = attack.strip().lower()
    lower = labels.str.lower()
    return (lower == want) | (lower.map(family_of_label) == want)


def _known(values: Any) -> str:
    shown = sorted({_fmt(v) for v in values if not (isinstance(v, float) and math.isnan(v))})
    return ", ".join(shown[:12]) + (" ..." if len(shown) > 12 else "") or "none"


def select(frame: pd.DataFrame, rule: Rule, what: str = "results") -> pd.DataFrame:
    """The rows a rule applies to; a named value that the table lacks is a GateInputError."""

    def fail(message: str) -> GateInputError:
        return GateInputError(f"rule '{rule.label}': {message}")

    rows = frame[frame["model"] == rule.model]
    if rows.empty:
        raise fail(f"model '{rule.model}' is not in the {what}; models there: {_known(frame['model'])}")
    if rule.metric not in set(rows["metric"]):
        hint = ""
        if "ood" in rule.metric:
            hint = " (OOD AUROCs come from an evaluation with ood = true)"
        elif rule.metric in DETECTION_METRICS:
            hint = " (detection AUROCs need the run's per-example table, examples.parquet)"
        raise fail(
            f"metric '{rule.metric}' is not in the {what}; metrics there: {_known(rows['metric'])}{hint}"
        )
    rows = rows[rows["metric"] == rule.metric]
    inputs = set(rows["input"])
    if rule.input is not None:
        if rule.input not in inputs:
            raise fail(f"input '{rule.input}' is not in the {what} for metric '{rule.metric}'; inputs there: "
                       f"{_known(inputs)}")  # fmt: skip
        rows = rows[rows["input"] == rule.input]
    elif "adversarial" in inputs:
        rows = rows[rows["input"] == "adversarial"]
    if rule.attack is not None:
        matched = rows[_attack_matches(rows["attack"], rule.attack)]
        if matched.empty:
            raise fail(
                f"attack '{rule.attack}' is not in the {what}; attacks there: {_known(rows['attack'])}"
            )
        rows = matched
    if rule.eps is not None:
        matched = rows[np.isclose(rows["eps"].to_numpy(float), rule.eps, rtol=0, atol=EPS_TOLERANCE)]
        if matched.empty:
            raise fail(f"eps {rule.eps:g} is not in the {what}; eps there: {_known(rows['eps'])}")
        rows = matched
    for key in FILTERS:
        want = getattr(rule, key)
        if want is None:
            continue
        if key not in rows.columns:
            raise fail(f"the {what} have no '{key}' column to filter on; remove {key} from the rule")
        matched = rows[rows[key].astype(str).str.lower() == str(want).lower()]
        if matched.empty:
            raise fail(f"{key} {want} is not in the {what}; {key} there: {_known(rows[key])}")
        rows = matched
    rows = rows[rows["value"].notna()]
    if rows.empty:
        raise fail(f"every matching value in the {what} is missing (NaN)")
    return rows


# ---------------------------------------------------------------------------------------------- flags


def prepare_flags(flags: pd.DataFrame) -> pd.DataFrame:
    """Check a sanity flags table's columns (flags.csv) and normalise its types."""
    missing = [c for c in FLAG_COLUMNS if c not in flags.columns]
    if missing:
        raise GateInputError(
            f"the sanity flags table lacks column(s) {', '.join(missing)}: not a robusthyper flags.csv; "
            "re-run the evaluation with this robusthyper"
        )
    frame = flags.copy()
    for column in ("code", "model", "attack"):
        frame[column] = frame[column].astype(str)
    frame["eps"] = pd.to_numeric(frame["eps"], errors="coerce")
    return frame


def _check_flags(rule: FlagRule, frame: pd.DataFrame, flags: pd.DataFrame | None) -> RuleResult:
    if flags is None:
        raise GateInputError(
            f"rule '{rule.label}' checks sanity flags, but the results come without them (flags.csv); "
            "check a run folder written by this robusthyper's sweep, attack or gate"
        )
    known = set(frame["model"])
    for name in rule.models or []:
        if name not in known:
            raise GateInputError(
                f"rule '{rule.label}': model '{name}' is not in the results; models there: {_known(known)}"
            )
    hits = flags[flags["code"].isin(rule.codes)]
    if rule.models:
        hits = hits[hits["model"].isin(rule.models)]
    columns = [c for c in ("code", "severity", "model", "attack", "eps", "message") if c in hits.columns]
    found = tuple({c: row[c] for c in columns} for _, row in hits.iterrows())
    count = float(len(found))
    return RuleResult(rule, not found, count, None, None, count, rule.threshold, None, len(flags),
                      flags=found)  # fmt: skip


# ---------------------------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class _Stat:
    value: float
    low: float | None
    high: float | None
    n: int | None
    row: pd.Series


def _stats(rows: pd.DataFrame, metric: str) -> list[_Stat]:
    out = []
    for _, row in rows.iterrows():
        value = float(row["value"])
        n = row.get("n")
        n = int(n) if n is not None and not pd.isna(n) else None
        low = high = None
        if is_proportion(metric) and n:
            successes = int(round(value * n))
            low, high = wilson(successes, n)
        out.append(_Stat(value, low, high, n, row))
    return out


def _pick(stat: _Stat, bound: str) -> float:
    if bound == "lower" and stat.low is not None:
        return stat.low
    if bound == "upper" and stat.high is not None:
        return stat.high
    return stat.value


def _where(row: pd.Series, rule: Rule) -> dict[str, Any]:
    keys = (
        ["attack", "eps"] if row["input"] == "adversarial" else ["input"] if row["input"] != "clean" else []
    )
    keys += [k for k in ("eot", "k_attack", "k_eval", "seed") if k in row.index and not pd.isna(row[k])]
    return {k: _plain(row[k]) for k in keys}


def _check_rule(
    rule: Rule | FlagRule, frame: pd.DataFrame, baseline: pd.DataFrame | None, flags: pd.DataFrame | None
) -> RuleResult:
    if isinstance(rule, FlagRule):
        return _check_flags(rule, frame, flags)
    stats = _stats(select(frame, rule), rule.metric)
    if rule.kind in ("min", "max"):
        sign = (
            1 if rule.kind == "min" else -1
        )  # the worst row has the lowest (min) or highest (max) statistic
        worst = min(stats, key=lambda s: sign * _pick(s, rule.bound))
        statistic = _pick(worst, rule.bound)
        passed = statistic >= rule.threshold if rule.kind == "min" else statistic <= rule.threshold
        return RuleResult(rule, bool(passed), worst.value, worst.low, worst.high, statistic, rule.threshold,
                          worst.n, len(stats), where=_where(worst.row, rule))  # fmt: skip
    if baseline is None:
        raise GateInputError(f"rule '{rule.label}' compares with a baseline; pass --baseline RUN_DIR")
    base_stats = _stats(select(baseline, rule, "baseline"), rule.metric)
    # The worse value of each side: the lowest when a drop is bounded, the highest when a rise is.
    sign = 1 if rule.kind == "max_drop" else -1
    now = min(stats, key=lambda s: sign * s.value)
    then = min(base_stats, key=lambda s: sign * s.value)
    change = sign * (then.value - now.value)  # drop = baseline - now; rise = now - baseline
    low = high = None
    if now.low is not None and then.low is not None:
        a, b = (then, now) if sign == 1 else (now, then)
        low, high = newcombe(a.value, (a.low, a.high), b.value, (b.low, b.high))  # type: ignore[arg-type]
    statistic = {"lower": low, "upper": high}.get(rule.bound, change)
    statistic = change if statistic is None else statistic
    return RuleResult(rule, bool(statistic <= rule.threshold), change, low, high, statistic, rule.threshold,
                      now.n, len(stats), current=now.value, baseline=then.value,
                      where=_where(now.row, rule))  # fmt: skip


def evaluate_rules(
    results: pd.DataFrame,
    policy: GatePolicy,
    *,
    examples: pd.DataFrame | None = None,
    baseline: pd.DataFrame | None = None,
    baseline_examples: pd.DataFrame | None = None,
    flags: pd.DataFrame | None = None,
) -> list[RuleResult]:
    """Every rule of `policy`, checked against `results` (and `baseline` for drop and rise rules; `flags`,
    the run's sanity flags table, for no-flags rules)."""
    frame = with_detection(prepare(results), examples)
    flag_frame = None if flags is None else prepare_flags(flags)
    base = None
    if baseline is not None:
        base = with_detection(prepare(baseline, "baseline"), baseline_examples)
        check_comparable(prepare(results), prepare(baseline, "baseline"))
    elif policy.needs_baseline:
        first = next(r for r in policy.rules if r.needs_baseline)
        raise GateInputError(f"rule '{first.label}' compares with a baseline; pass --baseline RUN_DIR")
    return [_check_rule(rule, frame, base, flag_frame) for rule in policy.rules]


def check(
    results: pd.DataFrame,
    policy: GatePolicy,
    *,
    examples: pd.DataFrame | None = None,
    baseline: pd.DataFrame | None = None,
    baseline_examples: pd.DataFrame | None = None,
    flags: pd.DataFrame | None = None,
) -> list[Violation]:
    """The rules of `policy` that `results` break (empty: the gate passes)."""
    checked = evaluate_rules(results, policy, examples=examples, baseline=baseline,
                             baseline_examples=baseline_examples, flags=flags)  # fmt: skip
    return violations(checked)


def violations(checked: Sequence[RuleResult]) -> list[Violation]:
    return [Violation(r.name, r.message(), r) for r in checked if not r.passed]
