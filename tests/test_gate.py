"""Tests of `robusthyper gate` (issue 6): policy validation, Wilson intervals, the pure rule check, baselines,
JUnit XML and JSON output, every exit path of the CLI, and the project's own gate run end to end on a tiny
model that passes and on an untrained one that fails."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from robusthyper.cli import app
from robusthyper.errors import ConfigError, UserError
from robusthyper.gate import (
    GateInputError,
    check,
    evaluate_rules,
    load_policy,
    newcombe,
    parse_policy,
    wilson,
)
from robusthyper.run import Run

ROOT = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------------------ fixtures


def results_table(
    robust: dict[str, float] | None = None, n: int = 200, dataset: str = "mnist5k", clean: float = 0.9
) -> pd.DataFrame:
    """A tidy results table as `robusthyper.evaluate.run` writes it: det and bbh under pgd-40 and fgsm."""
    robust = robust or {"det": 0.2, "bbh": 0.45}
    rows = []
    for model, acc in robust.items():
        for attack in ("pgd-40", "fgsm"):
            for eps in (0.0, 0.1):
                adv = clean if eps == 0 else acc + (0.05 if attack == "fgsm" else 0.0)
                for which, value in (("clean", clean), ("adversarial", adv)):
                    for metric, v in (("accuracy", value), ("nll", 1 - value), ("entropy", 0.3)):
                        rows.append({
                            "model": model, "posterior": model, "dataset": dataset, "n": n, "attack": attack,
                            "norm": "linf", "eps": eps, "steps": 40 if attack != "fgsm" else 1, "step_size": 0.025,
                            "restarts": 1, "random_init": attack != "fgsm", "eot": "bma", "k_attack": 20,
                            "k_eval": 100, "seed": 0, "input": which, "metric": metric, "value": v,
                        })  # fmt: skip
    return pd.DataFrame(rows)


def examples_table(model: str = "bbh", n: int = 50, separable: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1, n)
    adv = clean + 2.0 if separable else rng.uniform(0, 1, n)
    return pd.DataFrame({
        "model": model, "attack": "pgd-40", "norm": "linf", "eps": 0.1, "k_attack": 20, "k_eval": 100, "seed": 0,
        "index": np.arange(n), "clean_correct": True, "adv_correct": False, "clean_entropy": clean,
        "adv_entropy": adv, "clean_mi": clean, "adv_mi": adv, "perturbation": 0.1,
    })  # fmt: skip


def rules_of(results: pd.DataFrame, rules, *, examples=None, flags=None, baseline=None):
    """`evaluate_rules` on tables in memory (`Run.of`), as a caller of the Python API holds them."""
    base = None if baseline is None else Run.of(baseline)
    return evaluate_rules(Run.of(results, examples, flags), rules, baseline=base)


def violations_of(results: pd.DataFrame, rules, *, examples=None, flags=None, baseline=None):
    base = None if baseline is None else Run.of(baseline)
    return check(Run.of(results, examples, flags), rules, baseline=base)


def write_run(folder: Path, results: pd.DataFrame, meta: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    results.to_csv(folder / "results.csv", index=False)
    (folder / "meta.json").write_text(json.dumps(meta or {"command": "attack"}))
    return folder


def policy(*rules: dict, **top) -> object:
    return parse_policy({"rules": list(rules), **top}, "<test>")


BBH_PGD = {"model": "bbh", "attack": "pgd", "eps": 0.1}

# ------------------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (5, 10), (10, 10), (90, 200), (123, 1000), (1, 1)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    from scipy.stats import binomtest

    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson(k, n)
    assert low == pytest.approx(expected.low, abs=1e-12) and high == pytest.approx(expected.high, abs=1e-12)


def test_wilson_closed_form_by_hand() -> None:
    # 90/200 = 0.45: centre (p + z^2/2n) / (1 + z^2/n), half-width z sqrt(p q / n + z^2 / 4n^2) / (1 + z^2/n)
    z, p, n = 1.959963984540054, 0.45, 200
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)),
    )
    half /= 1 + z * z / n
    assert wilson(90, n) == pytest.approx((centre - half, centre + half), abs=1e-15)
    assert wilson(90, n) == pytest.approx((0.3826, 0.5192), abs=1e-4)
    with pytest.raises(ValueError):
        wilson(3, 0)


def test_newcombe_contains_the_difference_and_reduces_to_wilson() -> None:
    a, b = (0.6, wilson(120, 200)), (0.45, wilson(90, 200))
    low, high = newcombe(a[0], a[1], b[0], b[1])
    assert low < 0.15 < high and -1 <= low and high <= 1
    # Against a point mass (an interval of zero width), the difference interval is the shifted Wilson interval.
    low, high = newcombe(0.6, wilson(120, 200), 0.0, (0.0, 0.0))
    assert (low, high) == pytest.approx(wilson(120, 200))


# ------------------------------------------------------------------------------------------ policy


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ({**BBH_PGD, "min": 40}, "outside [0, 1]"),
        ({**BBH_PGD, "min": -0.1}, "outside [0, 1]"),
        ({**BBH_PGD, "max_drop": 1.5}, "outside [0, 1]"),
        ({**BBH_PGD, "metric": "detection_auroc_mi", "min": 2}, "outside [0, 1]"),
        ({**BBH_PGD}, "exactly one of min, max"),
        ({**BBH_PGD, "min": 0.1, "max": 0.9}, "exactly one of min, max"),
        ({**BBH_PGD, "min": 0.4, "treshold": 0.4}, "unknown key 'rules.0.treshold'"),
        ({**BBH_PGD, "metric": "nll", "max": 2.0, "bound": "lower"}, "needs an accuracy metric"),
        ({**BBH_PGD, "min": 0.4, "bound": "lowest"}, "bound"),
        ({**BBH_PGD, "eps": "8/0", "min": 0.4}, "divides by zero"),
        ({"attack": "pgd", "min": 0.4}, "required key 'rules.0.model'"),
    ],
)  # fmt: skip
def test_bad_rules_are_one_line_config_errors(rule: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        policy(rule)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_policy_keys_and_sections_are_strict() -> None:
    with pytest.raises(ConfigError, match="unknown key 'thresholds'"):
        parse_policy({"rules": [{**BBH_PGD, "min": 0.4}], "thresholds": {}}, "p")
    with pytest.raises(ConfigError, match="unknown key 'evaluate.modle'"):
        parse_policy({"rules": [{**BBH_PGD, "min": 0.4}], "evaluate": {"modle": ["x"], "models": ["x"],
                      "attacks": [{"eps": 0.1}]}}, "p")  # fmt: skip
    with pytest.raises(ConfigError, match="rules"):
        parse_policy({"rules": []}, "p")
    p = policy({**BBH_PGD, "eps": "1/10", "min": 0.4})
    assert p.rules[0].eps == pytest.approx(0.1) and p.rules[0].kind == "min" and p.rules[0].threshold == 0.4


def test_policy_from_file_pyproject_and_default(tmp_path: Path) -> None:
    rule = '[[rules]]\nmodel = "bbh"\nattack = "pgd"\neps = 0.1\nmin = 0.4\n'
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(UserError, match="no gate policy"):
        load_policy(None, tmp_path)
    (tmp_path / "robustness.toml").write_text(rule)
    assert load_policy(None, tmp_path)[1].endswith("robustness.toml")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n' + rule.replace("[[rules]]", "[[tool.robusthyper.gate.rules]]")
    )
    found, source = load_policy(None, tmp_path)
    assert "[tool.robusthyper.gate]" in source and found.rules[0].model == "bbh"
    (tmp_path / "bad.toml").write_text("[[rules]\nmodel = ")
    with pytest.raises(ConfigError, match="malformed TOML"):
        load_policy(tmp_path / "bad.toml")
    with pytest.raises(UserError, match="does not exist"):
        load_policy(tmp_path / "missing.toml")


def test_the_projects_own_policy_is_valid() -> None:
    from robusthyper.gate.runs import plan_specs, precheck

    found, _ = load_policy(ROOT / "robustness.toml")
    assert found.evaluate is not None
    precheck(found, plan_specs(found.evaluate))


# ------------------------------------------------------------------------------------------ check


def test_check_passes_and_fails() -> None:
    results = results_table()
    assert violations_of(results, policy({**BBH_PGD, "min": 0.4})) == []
    violations = violations_of(
        results, policy({**BBH_PGD, "min": 0.5}, {"model": "det", "input": "clean", "min": 0.8})
    )
    assert len(violations) == 1 and "bbh" in violations[0].rule and "FAILS" in violations[0].message
    # max rules, other metrics
    assert violations_of(results, policy({**BBH_PGD, "metric": "nll", "max": 0.6})) == []
    assert len(violations_of(results, policy({**BBH_PGD, "metric": "nll", "max": 0.5}))) == 1


def test_lower_bound_flips_a_borderline_rule() -> None:
    results = results_table({"bbh": 0.45}, n=200)  # Wilson 95%: [0.3826, 0.5192]
    estimate = rules_of(results, policy({**BBH_PGD, "min": 0.40}))[0]
    lower = rules_of(results, policy({**BBH_PGD, "min": 0.40, "bound": "lower"}))[0]
    assert estimate.passed and not lower.passed
    assert lower.statistic == pytest.approx(wilson(90, 200)[0]) and lower.value == pytest.approx(0.45)
    # 'upper' is the lenient side: fail only when the whole interval is below the threshold.
    assert not rules_of(results, policy({**BBH_PGD, "min": 0.50}))[0].passed
    assert rules_of(results, policy({**BBH_PGD, "min": 0.50, "bound": "upper"}))[0].passed
    # The same share over more examples has a narrower interval: the lower bound passes.
    assert rules_of(results_table({"bbh": 0.45}, n=5000), policy({**BBH_PGD, "min": 0.43,
                                                                        "bound": "lower"}))[0].passed  # fmt: skip


def test_a_rule_holds_for_every_matching_row() -> None:
    results = results_table()
    seed1 = results.assign(seed=1)
    seed1.loc[(seed1["model"] == "bbh") & (seed1["eps"] == 0.1) & (seed1["metric"] == "accuracy")
              & (seed1["input"] == "adversarial"), "value"] = 0.3  # fmt: skip
    both = pd.concat([results, seed1], ignore_index=True)
    out = rules_of(both, policy({**BBH_PGD, "min": 0.4}))[0]
    assert not out.passed and out.value == pytest.approx(0.3) and out.where["seed"] == 1 and out.rows == 2
    assert rules_of(both, policy({**BBH_PGD, "min": 0.4, "seed": 0}))[0].passed
    # No attack named: every attack (fgsm is weaker here, so pgd's 0.45 is the worst); 'pgd' is not 'apgd'.
    assert rules_of(results, policy({"model": "bbh", "eps": 0.1, "min": 0.4}))[
        0
    ].value == pytest.approx(0.45)
    assert rules_of(results, policy({**BBH_PGD, "attack": "fgsm", "min": 0.4}))[
        0
    ].value == pytest.approx(0.5)
    assert rules_of(results, policy({**BBH_PGD, "attack": "pgd-40", "min": 0.4}))[0].passed


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ({**BBH_PGD, "model": "bnn", "min": 0.4}, "model 'bnn' is not in the results; models there: bbh, det"),
        ({**BBH_PGD, "attack": "apgd", "min": 0.4}, "attack 'apgd' is not in the results; attacks there: fgsm, pgd-40"),
        ({**BBH_PGD, "eps": 0.3, "min": 0.4}, "eps 0.3 is not in the results; eps there: 0, 0.1"),
        ({**BBH_PGD, "metric": "brier", "max": 0.4}, "metric 'brier' is not in the results"),
        ({**BBH_PGD, "metric": "ood_auroc_entropy", "min": 0.4}, "ood = true"),
        ({**BBH_PGD, "metric": "detection_auroc_mi", "min": 0.4}, "examples.parquet"),
        ({**BBH_PGD, "k_attack": 7, "min": 0.4}, "k_attack 7 is not in the results"),
        ({**BBH_PGD, "max_drop": 0.05}, "pass --baseline"),
    ],
)  # fmt: skip
def test_rules_naming_what_the_results_lack_are_errors(rule: dict, fragment: str) -> None:
    with pytest.raises(GateInputError) as err:
        violations_of(results_table(), policy(rule))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_results_of_another_schema_are_errors() -> None:
    with pytest.raises(UserError, match="lacks column"):
        violations_of(results_table().drop(columns=["metric"]), policy({**BBH_PGD, "min": 0.4}))


def test_detection_auroc_from_the_examples() -> None:
    results = results_table()
    rule = {**BBH_PGD, "metric": "detection_auroc_entropy", "min": 0.9}
    out = rules_of(results, policy(rule), examples=examples_table(separable=True))[0]
    assert out.passed and out.value == pytest.approx(1.0) and out.n == 50 and out.low is None
    out = rules_of(results, policy(rule), examples=examples_table(separable=False))[0]
    assert not out.passed and 0.2 < out.value < 0.8
    # A results table that already holds the metric is used as it is.
    own = pd.concat([results, results.iloc[[0]].assign(model="bbh", attack="pgd-40", eps=0.1, input="adversarial",
                     metric="detection_auroc_entropy", value=0.95)], ignore_index=True)  # fmt: skip
    assert rules_of(own, policy(rule), examples=examples_table(separable=False))[0].value == 0.95


def test_ood_rules_on_the_sweeps_ood_rows() -> None:
    results = results_table()
    base = results.iloc[0].to_dict()
    ood = [{**base, "model": "bbh", "attack": "ood", "eps": math.nan, "input": name, "metric": metric, "value": v}
           for name, v in (("uniform-noise", 0.99), ("fashion-mnist", 0.7))
           for metric in ("ood_auroc_entropy", "ood_auroc_mi")]  # fmt: skip
    frame = pd.concat([results, pd.DataFrame(ood)], ignore_index=True)
    every = rules_of(frame, policy({"model": "bbh", "metric": "ood_auroc_mi", "min": 0.8}))[0]
    assert (
        not every.passed
        and every.value == 0.7
        and every.where["input"] == "fashion-mnist"
        and every.rows == 2
    )
    noise = policy({"model": "bbh", "metric": "ood_auroc_mi", "input": "uniform-noise", "min": 0.8})
    assert rules_of(frame, noise)[0].passed
    with pytest.raises(GateInputError, match="input 'cifar10' is not in the results"):
        violations_of(frame, policy({"model": "bbh", "metric": "ood_auroc_mi", "input": "cifar10", "min": 0.8}))


# ------------------------------------------------------------------------------------------ baseline


def test_baseline_drop_and_rise() -> None:
    now, then = results_table({"bbh": 0.45}), results_table({"bbh": 0.55})
    drop = rules_of(now, policy({**BBH_PGD, "max_drop": 0.05}), baseline=then)[0]
    assert not drop.passed and drop.value == pytest.approx(0.10) and drop.baseline == pytest.approx(0.55)
    assert drop.low is not None and drop.low < 0.10 < drop.high  # Newcombe interval of the drop
    assert rules_of(now, policy({**BBH_PGD, "max_drop": 0.15}), baseline=then)[0].passed
    # 'lower' compares the drop's lower bound: a drop not clearly above the allowance passes.
    assert rules_of(now, policy({**BBH_PGD, "max_drop": 0.05, "bound": "lower"}), baseline=then)[
        0
    ].passed
    # An improvement is a negative drop.
    assert rules_of(then, policy({**BBH_PGD, "max_drop": 0.0}), baseline=now)[0].value == pytest.approx(
        -0.1
    )
    rise = rules_of(now, policy({**BBH_PGD, "metric": "nll", "max_rise": 0.05}), baseline=then)[0]
    assert not rise.passed and rise.value == pytest.approx(0.10) and rise.low is None


def test_incomparable_baselines_are_errors() -> None:
    rule = policy({**BBH_PGD, "max_drop": 0.05})
    with pytest.raises(GateInputError, match="different schema"):
        violations_of(results_table(), rule, baseline=results_table().drop(columns=["k_attack"]))
    with pytest.raises(GateInputError, match="evaluated on fashion-mnist but the results on mnist5k"):
        violations_of(results_table(), rule, baseline=results_table(dataset="fashion-mnist"))
    with pytest.raises(GateInputError, match="model 'bbh' is not in the baseline"):
        violations_of(results_table(), rule, baseline=results_table({"det": 0.3}))


# ------------------------------------------------------------------------------------------ no-flags rules


def flags_table(*flags: tuple[str, str, str, float]) -> pd.DataFrame:
    """A sanity flags table as flags.csv holds it: (code, model, attack, eps) per flag."""
    from robusthyper.sanity import FLAG_COLUMNS

    rows = [{"code": code, "severity": "error", "model": model, "attack": attack, "eps": eps,
             "message": f"{code} on {model}"} for code, model, attack, eps in flags]  # fmt: skip
    return pd.DataFrame(rows, columns=list(FLAG_COLUMNS))


NO_FLAGS = {"type": "no-flags"}


def test_flag_codes_are_the_ones_sanity_raises() -> None:
    import inspect
    import re

    from robusthyper import sanity
    from robusthyper.gate import FLAG_CODES

    raised = set(re.findall(r'Flag\(\s*"([a-z-]+)"', inspect.getsource(sanity)))
    assert raised == set(FLAG_CODES)


def test_no_flags_rule_passes_on_a_clean_run_and_fails_naming_each_flag() -> None:
    results = results_table()
    clean = rules_of(results, policy(NO_FLAGS), flags=flags_table())[0]
    assert clean.passed and clean.value == 0 and "passes" in clean.message()
    found = flags_table(
        ("square-stronger", "bbh", "square-1000", 0.1), ("zero-gradients", "det", "gradient-check", 0.0)
    )
    checked = rules_of(results, policy(NO_FLAGS, {**BBH_PGD, "min": 0.4}), flags=found)
    assert [r.passed for r in checked] == [False, True]
    message = checked[0].message()
    assert "2 sanity flag(s)" in message and "FAILS" in message
    assert (
        "square-stronger (bbh, square-1000, eps=0.1)" in message
        and "zero-gradients (det, gradient-check, eps=0)" in message
    )
    doc = checked[0].to_dict()
    assert (
        doc["kind"] == "no-flags"
        and doc["value"] == 2
        and [f["code"] for f in doc["flags"]] == ["square-stronger", "zero-gradients"]
    )
    # Narrowed to some kinds or some models, other flags do not count.
    only = policy({**NO_FLAGS, "flags": ["square-stronger"], "models": ["det"]})
    narrowed = rules_of(results, only, flags=found)[0]
    assert (
        narrowed.passed and narrowed.rows == 2 and narrowed.name == "no sanity flags (square-stronger) on det"
    )
    assert not rules_of(results, policy({**NO_FLAGS, "models": ["det"]}), flags=found)[0].passed
    assert not violations_of(results, policy({**NO_FLAGS, "flags": ["zero-gradients"]}), flags=found) == []


def test_bad_no_flags_rules() -> None:
    with pytest.raises(ConfigError) as err:
        policy({**NO_FLAGS, "flags": ["zero-gradient"]})
    assert "unknown sanity flag 'zero-gradient'" in str(err.value) and "\n" not in str(err.value)
    assert "square-stronger" in str(err.value) and "nonfinite-gradients" in str(err.value)
    with pytest.raises(ConfigError, match="unknown key 'rules.0.min'"):
        policy({**NO_FLAGS, "min": 0.5})
    with pytest.raises(ConfigError, match="unknown rule type 'no-flag'; known: threshold, no-flags"):
        policy({**BBH_PGD, "min": 0.4, "type": "no-flag"})
    with pytest.raises(GateInputError, match="model 'mcd' is not in the results"):
        violations_of(results_table(), policy({**NO_FLAGS, "models": ["mcd"]}), flags=flags_table())
    with pytest.raises(GateInputError, match="without them \\(flags.csv\\)"):
        violations_of(results_table(), policy(NO_FLAGS))
    with pytest.raises(GateInputError, match="without them \\(flags.csv\\)"):
        violations_of(results_table(), policy(NO_FLAGS), flags=pd.DataFrame({"what": [1]}))


# ------------------------------------------------------------------------------------------ CLI


def gate(*args: str):
    return CliRunner().invoke(app, ["gate", *args])


def write_policy(path: Path, *rules: str, extra: str = "") -> Path:
    path.write_text(extra + "".join(f"[[rules]]\n{r}\n" for r in rules))
    return path


GOOD = 'model = "bbh"\nattack = "pgd"\neps = 0.1\nmin = 0.4\n'
BORDERLINE_LOWER = 'model = "bbh"\nattack = "pgd"\neps = 0.1\nmin = 0.4\nbound = "lower"\n'
CLEAN = 'name = "clean"\nmodel = "det"\ninput = "clean"\nmin = 0.8\n'

# A JUnit XML schema (after the Jenkins/Ant junit-10.xsd that CI systems read): what a report must be.
JUNIT_XSD = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" elementFormDefault="qualified">
  <xs:element name="failure"><xs:complexType mixed="true">
    <xs:attribute name="type" type="xs:string"/><xs:attribute name="message" type="xs:string"/>
  </xs:complexType></xs:element>
  <xs:element name="error"><xs:complexType mixed="true">
    <xs:attribute name="type" type="xs:string"/><xs:attribute name="message" type="xs:string"/>
  </xs:complexType></xs:element>
  <xs:element name="skipped"><xs:complexType mixed="true">
    <xs:attribute name="message" type="xs:string"/>
  </xs:complexType></xs:element>
  <xs:element name="system-out" type="xs:string"/>
  <xs:element name="system-err" type="xs:string"/>
  <xs:element name="property"><xs:complexType>
    <xs:attribute name="name" type="xs:string" use="required"/>
    <xs:attribute name="value" type="xs:string" use="required"/>
  </xs:complexType></xs:element>
  <xs:element name="properties"><xs:complexType><xs:sequence>
    <xs:element ref="property" maxOccurs="unbounded"/>
  </xs:sequence></xs:complexType></xs:element>
  <xs:element name="testcase"><xs:complexType><xs:sequence>
    <xs:choice minOccurs="0" maxOccurs="unbounded">
      <xs:element ref="skipped"/><xs:element ref="error"/><xs:element ref="failure"/>
    </xs:choice>
    <xs:element ref="system-out" minOccurs="0" maxOccurs="unbounded"/>
    <xs:element ref="system-err" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence>
    <xs:attribute name="name" type="xs:string" use="required"/>
    <xs:attribute name="classname" type="xs:string" use="required"/>
    <xs:attribute name="time" type="xs:decimal"/>
  </xs:complexType></xs:element>
  <xs:element name="testsuite"><xs:complexType><xs:sequence>
    <xs:element ref="properties" minOccurs="0"/>
    <xs:element ref="testcase" minOccurs="0" maxOccurs="unbounded"/>
    <xs:element ref="system-out" minOccurs="0"/><xs:element ref="system-err" minOccurs="0"/>
  </xs:sequence>
    <xs:attribute name="name" type="xs:string" use="required"/>
    <xs:attribute name="tests" type="xs:nonNegativeInteger" use="required"/>
    <xs:attribute name="failures" type="xs:nonNegativeInteger"/>
    <xs:attribute name="errors" type="xs:nonNegativeInteger"/>
    <xs:attribute name="skipped" type="xs:nonNegativeInteger"/>
    <xs:attribute name="time" type="xs:decimal"/>
    <xs:attribute name="timestamp" type="xs:dateTime"/>
  </xs:complexType></xs:element>
  <xs:element name="testsuites"><xs:complexType><xs:sequence>
    <xs:element ref="testsuite" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence>
    <xs:attribute name="name" type="xs:string"/>
    <xs:attribute name="tests" type="xs:nonNegativeInteger"/>
    <xs:attribute name="failures" type="xs:nonNegativeInteger"/>
    <xs:attribute name="errors" type="xs:nonNegativeInteger"/>
    <xs:attribute name="time" type="xs:decimal"/>
  </xs:complexType></xs:element>
</xs:schema>
"""


def junit_counts(path: Path) -> tuple[int, int, list[str]]:
    """(tests, failures, names of failed cases) as a JUnit consumer reads them: from the test cases."""
    cases = ET.parse(path).getroot().findall("./testsuite/testcase")
    failed = [c.get("name", "") for c in cases if c.find("failure") is not None]
    return len(cases), len(failed), failed


def validate_junit(path: Path) -> None:
    """Validate against JUNIT_XSD with xmlschema (dev extra); without it, check the same structure by hand."""
    try:
        import xmlschema
    except ImportError:
        _check_junit_structure(ET.parse(path).getroot())
        return
    xmlschema.XMLSchema(JUNIT_XSD).validate(str(path))


def _check_junit_structure(root: ET.Element) -> None:
    assert root.tag == "testsuites" and all(child.tag == "testsuite" for child in root)
    for suite in root:
        assert (
            suite.get("name") and int(suite.get("tests", "-1")) >= 0 and int(suite.get("failures", "0")) >= 0
        )
        assert {child.tag for child in suite} <= {"properties", "testcase", "system-out", "system-err"}
        for case in suite.findall("testcase"):
            assert case.get("name") and case.get("classname") and float(case.get("time", "0")) >= 0
            assert {c.tag for c in case} <= {"failure", "error", "skipped", "system-out", "system-err"}


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", results_table({"det": 0.2, "bbh": 0.45}))


def test_cli_exit_0_when_every_rule_passes(run_folder: Path, tmp_path: Path) -> None:
    pol = write_policy(tmp_path / "p.toml", GOOD, CLEAN)
    xml = tmp_path / "ci" / "gate.xml"
    result = gate("--policy", str(pol), "--results", str(run_folder), "--junit-xml", str(xml))
    assert result.exit_code == 0, result.output
    assert "2/2 rules pass" in result.output and "pass" in result.output and "0.3826" in result.output
    validate_junit(xml)
    assert junit_counts(xml) == (2, 0, [])
    assert not list(xml.parent.glob(".*partial"))


def test_cli_exit_1_names_the_failing_rule(run_folder: Path, tmp_path: Path) -> None:
    pol = write_policy(tmp_path / "p.toml", GOOD, BORDERLINE_LOWER, CLEAN)
    xml = tmp_path / "gate.xml"
    result = gate("--policy", str(pol), "--results", str(run_folder), "--junit-xml", str(xml))
    assert result.exit_code == 1, result.output
    assert (
        "2/3 rules pass" in result.output
        and "FAIL bbh pgd eps=0.1: accuracy (lower bound) >= 0.4" in result.output
    )
    validate_junit(xml)
    tests, failures, names = junit_counts(xml)
    root = ET.parse(xml).getroot()
    assert (tests, failures) == (3, 1) == (int(root.get("tests")), int(root.get("failures")))
    assert names == ["bbh pgd eps=0.1: accuracy (lower bound) >= 0.4"]
    assert "lower bound 0.3826" in root.find("./testsuite/testcase/failure").get("message")


def test_cli_json(run_folder: Path, tmp_path: Path) -> None:
    pol = write_policy(tmp_path / "p.toml", GOOD, BORDERLINE_LOWER)
    result = gate("--policy", str(pol), "--results", str(run_folder), "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert (doc["rules"], doc["passed"], doc["failed"], doc["ok"]) == (2, 1, 1, False)
    low, high = wilson(90, 200)
    assert doc["results"][1]["ci_low"] == pytest.approx(low) and doc["results"][1][
        "ci_high"
    ] == pytest.approx(high)
    assert doc["results"][1]["statistic"] == pytest.approx(low) and doc["run"] == str(run_folder)


def test_cli_baseline(run_folder: Path, tmp_path: Path) -> None:
    pol = write_policy(tmp_path / "p.toml", 'model = "bbh"\nattack = "pgd"\neps = 0.1\nmax_drop = 0.05\n')
    better = write_run(tmp_path / "base", results_table({"det": 0.2, "bbh": 0.55}))
    same = write_run(tmp_path / "same", results_table({"det": 0.2, "bbh": 0.47}))
    assert gate("--policy", str(pol), "--results", str(run_folder), "--baseline", str(better)).exit_code == 1
    assert gate("--policy", str(pol), "--results", str(run_folder), "--baseline", str(same)).exit_code == 0
    csv = same / "results.csv"  # a results file works too
    assert (
        gate(
            "--policy", str(pol), "--results", str(run_folder / "results.csv"), "--baseline", str(csv)
        ).exit_code
        == 0
    )


def test_cli_no_flags_rule_reads_the_runs_flags_csv(run_folder: Path, tmp_path: Path) -> None:
    pol = write_policy(tmp_path / "p.toml", GOOD, 'type = "no-flags"\n')
    # A run folder without flags.csv cannot be checked for flags: bad input, never a silent pass.
    missing = gate("--policy", str(pol), "--results", str(run_folder))
    assert missing.exit_code == 2 and "flags.csv" in missing.output, missing.output
    flags_table().to_csv(run_folder / "flags.csv", index=False)
    assert gate("--policy", str(pol), "--results", str(run_folder)).exit_code == 0
    flags_table(("zero-gradients", "bbh", "gradient-check", 0.0)).to_csv(
        run_folder / "flags.csv", index=False
    )
    xml = tmp_path / "gate.xml"
    result = gate("--policy", str(pol), "--results", str(run_folder / "results.csv"), "--junit-xml", str(xml))
    assert result.exit_code == 1 and "1/2 rules pass" in result.output, result.output
    assert "FAIL no sanity flags (any kind): 1 sanity flag(s)" in result.output
    assert "zero-gradients (bbh, gradient-check, eps=0)" in result.output
    validate_junit(xml)
    assert junit_counts(xml) == (2, 1, ["no sanity flags (any kind)"])
    failure = ET.parse(xml).getroot().find("./testsuite/testcase/failure")
    assert failure.get("type") == "sanity-flags" and "zero-gradients" in failure.get("message")
    doc = json.loads(gate("--policy", str(pol), "--results", str(run_folder), "--json").stdout)
    assert doc["failed"] == 1 and doc["results"][1]["flags"][0]["model"] == "bbh"


def _bad_policy_cases(tmp_path: Path, run_folder: Path) -> list[tuple[list[str], str]]:
    def pol(name: str, text: str) -> str:
        (tmp_path / name).write_text(text)
        return str(tmp_path / name)

    (tmp_path / "empty").mkdir()
    other_schema = write_run(tmp_path / "schema", results_table().drop(columns=["k_eval"]))
    other_data = write_run(tmp_path / "fashion", results_table(dataset="fashion-mnist"))
    versioned = write_run(tmp_path / "v9", results_table(), {"schema_version": 9})
    drop = pol("drop.toml", '[[rules]]\nmodel = "bbh"\nattack = "pgd"\neps = 0.1\nmax_drop = 0.05\n')
    good = pol("good.toml", f"[[rules]]\n{GOOD}")
    return [
        (["--policy", pol("m.toml", '[[rules]]\nmodel = "bnn"\nmin = 0.4\n')], "model 'bnn' is not in the results"),
        (["--policy", pol("a.toml", '[[rules]]\nmodel = "bbh"\nattack = "cw"\nmin = 0.4\n')], "attack 'cw'"),
        (["--policy", pol("e.toml", '[[rules]]\nmodel = "bbh"\neps = "8/255"\nmin = 0.4\n')], "eps 0.0313725"),
        (["--policy", pol("x.toml", '[[rules]]\nmodel = "bbh"\nmetric = "ece"\nmax = 0.1\n')], "metric 'ece'"),
        (["--policy", pol("t.toml", '[[rules]]\nmodel = "bbh"\nmin = 40\n')], "outside [0, 1]"),
        (["--policy", pol("bad.toml", '[[rules]\nmodel = "bbh"\n')], "malformed TOML"),
        (["--policy", pol("k.toml", '[[rules]]\nmodel = "bbh"\nmin = 0.4\nepsilon = 0.1\n')], "unknown key"),
        (["--policy", str(tmp_path / "none.toml")], "does not exist"),
        (["--policy", drop, "--baseline", str(other_schema)], "different schema"),
        (["--policy", drop, "--baseline", str(other_data)], "evaluated on fashion-mnist"),
        (["--policy", drop, "--baseline", str(tmp_path / "nowhere")], "--baseline"),
        (["--policy", drop], "pass --baseline"),
        (["--policy", good, "--baseline", str(versioned)], "schema version 9"),
        (["--policy", good, "--junit-xml", str(tmp_path)], "is a folder"),
        (["--policy", good, "--results", str(tmp_path / "empty")], "holds no results.csv"),
        (["--policy", pol("noeval.toml", f"[[rules]]\n{GOOD}"), "--results", str(tmp_path / "gone")], "does not exist"),
    ]  # fmt: skip


def test_cli_bad_input_is_one_line_exit_2(run_folder: Path, tmp_path: Path) -> None:
    for args, fragment in _bad_policy_cases(tmp_path, run_folder):
        if "--results" not in args:
            args = [*args, "--results", str(run_folder)]
        result = gate(*args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], (
            args,
            result.output,
        )


def test_cli_without_results_or_evaluate_section(tmp_path: Path, monkeypatch) -> None:
    write_policy(tmp_path / "robustness.toml", GOOD)
    monkeypatch.chdir(tmp_path)
    result = gate("--device", "cpu")
    assert result.exit_code == 2 and "has no [evaluate] section" in result.output


def test_help_explains_every_option() -> None:
    result = CliRunner().invoke(app, ["gate", "--help"])
    assert result.exit_code == 0
    for option in ("--policy", "--results", "--baseline", "--junit-xml", "--json", "--run-dir", "--store"):
        assert option in result.output


# ------------------------------------------------------------------------------------------ evaluation mode


class FakeSweep:
    """Stands in for `robusthyper.sweep.run_sweep` (its documented API): a cell is computed once per run
    folder and reused after, the results being `results_table()`."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, run_dir, models, specs, **kwargs):
        from types import SimpleNamespace

        self.calls.append({"run_dir": Path(run_dir), "models": list(models), "specs": list(specs), **kwargs})
        run_dir = Path(run_dir)
        fresh = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        cells = len(models) * len(specs)
        run = Run.of(results_table())
        run.folder = run_dir
        return SimpleNamespace(run=run, computed=cells if fresh else 0, reused=0 if fresh else cells,
                               report=None)  # fmt: skip


EVALUATE = """[evaluate]
models = ["det", "bbh"]
n = 50
seeds = [0, 1]
k_eval = 4
[[evaluate.attacks]]
attack = "pgd"
eps = [0, 0.1]
steps = 5
k_attack = 2
[[evaluate.attacks]]
attack = "fgsm"
eps = 0.1
"""


@pytest.fixture
def fake_sweep(monkeypatch) -> FakeSweep:
    import sys
    import types

    fake = FakeSweep()
    module = types.ModuleType("robusthyper.sweep")
    module.run_sweep = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "robusthyper.sweep", module)
    return fake


def test_evaluation_mode_plans_specs_and_reuses_its_run_folder(fake_sweep, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path / "robustness.toml", GOOD, extra=EVALUATE)
    first = gate("--device", "cpu", "--quiet", "--store", str(tmp_path / "models"))
    assert first.exit_code == 0, first.output
    call = fake_sweep.calls[0]
    assert call["run_dir"].parent == Path("reports") and call["run_dir"].name.startswith("gate-")
    assert call["models"] == ["det", "bbh"] and call["n"] == 50 and call["resume"] is True
    labels = sorted({(s.label, s.eps, s.seed, s.k_eval) for s in call["specs"]})
    assert len(call["specs"]) == 6 and ("pgd-5", 0.1, 1, 4) in labels and ("fgsm", 0.1, 0, 4) in labels
    assert "12 cells computed, 0 reused" in first.output
    assert (
        call["meta"] == {"gate_policy": "robustness.toml"} or "robustness.toml" in call["meta"]["gate_policy"]
    )
    # A re-run after a changed threshold: the same folder, nothing recomputed.
    write_policy(tmp_path / "robustness.toml", GOOD.replace("0.4", "0.5"), extra=EVALUATE)
    again = gate("--device", "cpu", "--quiet", "--store", str(tmp_path / "models"))
    assert again.exit_code == 1 and "0 cells computed, 12 reused" in again.output
    assert fake_sweep.calls[1]["run_dir"] == call["run_dir"]
    # Other evaluation settings get another folder; --run-dir names one.
    write_policy(tmp_path / "robustness.toml", GOOD, extra=EVALUATE.replace("n = 50", "n = 60"))
    assert (
        gate("--device", "cpu", "--quiet").exit_code == 0
        and fake_sweep.calls[2]["run_dir"] != call["run_dir"]
    )
    assert gate("--device", "cpu", "--quiet", "--run-dir", str(tmp_path / "ci")).exit_code == 0
    assert fake_sweep.calls[3]["run_dir"] == tmp_path / "ci"


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ('model = "bbh"\nattack = "square"\nmin = 0.4\n', "attack 'square' is not in the policy's [evaluate]"),
        ('model = "bbh"\neps = 0.3\nmin = 0.4\n', "eps 0.3 is not in the policy's [evaluate] section; eps there: 0, 0.1"),
        ('model = "mcd"\nmin = 0.4\n', "model 'mcd' is not in the policy's [evaluate]"),
        ('model = "bbh"\nmetric = "ood_auroc_entropy"\nmin = 0.4\n', "set ood = true"),
        ('type = "no-flags"\nmodels = ["mcd"]\n', "model 'mcd' is not in the policy's [evaluate] section"),
        ('type = "no-flags"\nflags = ["masked"]\n', "unknown sanity flag 'masked'; known: non-monotone"),
    ],
)  # fmt: skip
def test_evaluation_mode_checks_the_policy_before_running(fake_sweep, tmp_path, rule, fragment) -> None:
    pol = write_policy(tmp_path / "p.toml", rule, extra=EVALUATE)
    result = gate("--policy", str(pol), "--device", "cpu", "--out", str(tmp_path / "reports"))
    assert (
        result.exit_code == 2 and fragment in result.output and len(result.output.strip().splitlines()) == 1
    )
    assert fake_sweep.calls == [] and not (tmp_path / "reports").exists()


# ------------------------------------------------------------------------------------------ dogfooding

TINY_RECIPE = """description = "A tiny MLP: the project's own CI gates it (tests/test_gate.py)"
dataset = "mnist5k"
[net]
arch = "mlp"
widths = [64]
[posterior]
kind = "det"
[train]
epochs = 2
batch_size = 64
eval_samples = 1
val_fraction = 0.0
"""


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    """./defenses/ci-tiny.toml trained well (store 'good') and not at all (store 'bad', 0 epochs)."""
    root = tmp_path_factory.mktemp("dogfood")
    (root / "defenses").mkdir()
    (root / "defenses" / "ci-tiny.toml").write_text(TINY_RECIPE)
    import os

    cwd = os.getcwd()
    os.chdir(root)
    try:
        for store, epochs in (("good", "2"), ("bad", "0")):
            result = CliRunner().invoke(app, ["train", "ci-tiny", "--store", store, "--epochs", epochs,
                                              "--device", "cpu", "--quiet"])  # fmt: skip
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(cwd)
    return root


def _gate_own_policy(root: Path, store: str, *extra: str):
    """The project's robustness.toml, with its model swapped for the tiny one, run through the CLI."""
    policy = (ROOT / "robustness.toml").read_text().replace('"det"', '"ci-tiny"')
    (root / "robustness.toml").write_text(policy)
    return gate("--store", store, "--device", "cpu", "--run-dir", f"reports/gate-{store}", "--quiet", *extra)


def test_dogfood_gate_passes_a_trained_model_and_fails_an_untrained_one(tiny_models, monkeypatch) -> None:
    monkeypatch.chdir(tiny_models)
    good = _gate_own_policy(tiny_models, "good", "--junit-xml", "good.xml", "--no-report")
    assert good.exit_code == 0, good.output
    assert junit_counts(tiny_models / "good.xml") == (3, 0, [])  # the no-flags rule passes a sound model
    bad = _gate_own_policy(tiny_models, "bad", "--junit-xml", "bad.xml", "--no-report")
    assert bad.exit_code == 1, bad.output
    tests, failures, names = junit_counts(tiny_models / "bad.xml")
    assert tests == 3 and failures >= 1 and "3 cells computed, 0 reused" in bad.output  # 2 attacks + the probe
    assert "clean accuracy" in names or "robust accuracy, PGD-10 eps 0.05" in names
    validate_junit(tiny_models / "bad.xml")
    # Re-running the failed gate recomputes nothing: every cell comes from the run folder.
    again = _gate_own_policy(tiny_models, "bad", "--json", "--no-report")
    doc = json.loads(again.stdout)
    assert again.exit_code == 1 and (doc["computed"], doc["reused"]) == (0, 3) and not doc["ok"]


PLANTED_NETS = """
from test_sanity import MaskedNet

from robusthyper import store
from robusthyper.loading import ModulePosterior


def planted():
    \"\"\"ci-tiny (store 'good') behind test_sanity's planted gradient masking.\"\"\"
    return ModulePosterior(MaskedNet(store.load("ci-tiny", "good").posterior.net), stochastic=False)
"""

FLAG_POLICY = """[evaluate]
models = ["ci-tiny", "planted_nets:planted"]
n = 100
k_eval = 1
[[evaluate.attacks]]
attack = "pgd"
eps = [0, 0.05]
steps = 5
k_attack = 1

[[rules]]
type = "no-flags"
models = ["ci-tiny"]

[[rules]]
name = "required sanity checks"
type = "no-flags"
"""


def test_no_flags_rule_passes_a_sound_model_and_fails_the_planted_masking_one(
    tiny_models, monkeypatch
) -> None:
    monkeypatch.chdir(tiny_models)
    monkeypatch.syspath_prepend(str(tiny_models))
    (tiny_models / "planted_nets.py").write_text(PLANTED_NETS)
    (tiny_models / "flags.toml").write_text(FLAG_POLICY)
    result = gate("--policy", "flags.toml", "--store", "good", "--device", "cpu", "--run-dir", "reports/flags",
                  "--junit-xml", "flags.xml", "--no-report", "--quiet")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert junit_counts(tiny_models / "flags.xml") == (2, 1, ["required sanity checks"])
    validate_junit(tiny_models / "flags.xml")
    assert "zero-gradients (planted, gradient-check, eps=0)" in result.output
    flags = pd.read_csv(tiny_models / "reports" / "flags" / "flags.csv")
    assert set(flags["model"]) == {"planted"}


def test_the_readme_policy_example_is_valid() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Robustness gate in CI", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    import tomllib

    found = parse_policy(tomllib.loads(block), "README")
    assert found.evaluate is not None and len(found.rules) == 4 and found.needs_baseline
    assert found.rules[-1].type == "no-flags" and found.rules[-1].models == ["bbh"]


def test_plan_specs_from_presets_seeds_and_k() -> None:
    from robusthyper.gate.runs import plan_specs

    found = parse_policy({"rules": [{**BBH_PGD, "min": 0.4}], "evaluate": {
        "models": ["bbh"], "seeds": [0, 3], "k_attack": [1, 5], "k_eval": 7,
        "attacks": [{"preset": "fgsm"}, {"attack": "pgd", "eps": [0.1], "steps": 3}]}}, "p")  # fmt: skip
    specs = plan_specs(found.evaluate)
    assert len(specs) == 2 * 2 * (4 + 1) and {s.k_eval for s in specs} == {7}
    assert {(s.seed, s.k_attack) for s in specs} == {(0, 1), (0, 5), (3, 1), (3, 5)}
    assert sorted({s.eps for s in specs if s.label == "fgsm"}) == [0.05, 0.1, 0.2, 0.3]
    suite = parse_policy({"rules": [{**BBH_PGD, "min": 0.4}], "evaluate": {
        "models": ["bbh"], "attacks": [{"preset": "quick", "k_eval": 3}]}}, "p")  # fmt: skip
    from robusthyper.sweep import load_suite

    # A suite's every attack (whatever quick.toml holds), with the policy's overrides.
    assert plan_specs(suite.evaluate) == list(dict.fromkeys(load_suite("quick", {"k_eval": 3}).specs))
    assert {s.k_eval for s in plan_specs(suite.evaluate)} == {3} and "fgsm" in {
        s.label for s in plan_specs(suite.evaluate)
    }
    bad = parse_policy({"rules": [{**BBH_PGD, "min": 0.4}], "evaluate": {
        "models": ["bbh"], "attacks": [{"attack": "pgd", "eps": 0.1, "stepz": 3}]}}, "p")  # fmt: skip
    with pytest.raises(ConfigError, match="stepz"):
        plan_specs(bad.evaluate)
