"""Tests of the run-folder contract (robusthyper.run): the writer and the one reader round-trip every table,
an older schema version is converted as documented, a newer one and broken folders are refused in one line,
and the derived tables (Wilson intervals, detection AUROCs) against closed forms and brute force."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robusthyper.errors import UserError
from robusthyper.run import Run, read_run, run_meta, schema, write_run
from robusthyper.run.tables import detection_aurocs, detection_rows, wilson, with_wilson


def results_table() -> pd.DataFrame:
    rows = []
    for attack, family, eps in (("pgd-40", "pgd", 0.1), ("fgsm", "fgsm", 0.1), ("worst-case", "worst-case", 0.1)):
        for which, value in (("clean", 0.9), ("adversarial", 0.4)):
            rows.append({"model": "bbh", "posterior": "bbh", "dataset": "mnist5k", "n": 10, "attack": attack,
                         "family": family, "norm": "linf", "eps": eps, "steps": 40, "step_size": 0.025,
                         "restarts": 1, "random_init": True, "eot": "bma", "k_attack": 20, "k_eval": 100,
                         "seed": 0, "protocol": "strong", "input": which, "metric": "accuracy", "value": value})
    return pd.DataFrame(rows, columns=list(schema.RESULT_COLUMNS))


def examples_table(n: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "model": "bbh", "attack": "pgd-40", "family": "pgd", "norm": "linf", "eps": 0.1, "k_attack": 20,
        "protocol": "strong", "k_eval": 100, "seed": 0, "index": np.arange(n), "clean_correct": True,
        "adv_correct": rng.random(n) < 0.4, "clean_entropy": rng.random(n), "adv_entropy": rng.random(n) + 0.5,
        "clean_mi": rng.random(n), "adv_mi": rng.random(n), "clean_nll": 0.1, "adv_nll": 1.0,
        "clean_confidence": 0.9, "adv_confidence": 0.5, "perturbation": 0.1,
    })  # fmt: skip


def flags_table() -> pd.DataFrame:
    return pd.DataFrame([{"code": "non-monotone", "severity": "error", "model": "bbh", "attack": "pgd-40",
                          "eps": 0.1, "message": "rises"}])  # fmt: skip


def test_round_trip(tmp_path: Path) -> None:
    results, examples, flags = results_table(), examples_table(), flags_table()
    meta = run_meta("r1", command="sweep", n=10)
    write_run(tmp_path / "r1", results, meta, examples, flags)
    assert not list((tmp_path / "r1").glob(".*partial"))
    run = read_run(tmp_path / "r1")
    pd.testing.assert_frame_equal(run.results, results, check_dtype=False)
    pd.testing.assert_frame_equal(run.examples, examples, check_dtype=False)
    pd.testing.assert_frame_equal(run.flags, flags, check_dtype=False)
    assert run.meta["schema_version"] == schema.SCHEMA_VERSION and run.meta["n"] == 10
    assert run.meta["versions"]["robusthyper"] and run.notes == []
    # The CSV beside the parquet holds the same table for people (and for pandas without pyarrow).
    csv = pd.read_csv(tmp_path / "r1" / schema.RESULTS_CSV)
    assert list(csv.columns) == list(schema.RESULT_COLUMNS) and len(csv) == len(results)
    # A results file reads with the flags beside it.
    from_file = read_run(tmp_path / "r1" / schema.RESULTS_PARQUET)
    assert from_file.flags is not None and len(from_file.results) == len(results)


def test_a_failed_write_keeps_the_old_files(tmp_path: Path, monkeypatch) -> None:
    write_run(tmp_path, results_table(), run_meta("r"), None, flags_table())
    before = (tmp_path / schema.RESULTS_CSV).read_bytes()

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError):
        write_run(tmp_path, results_table().assign(value=0.0), run_meta("r"), None, flags_table())
    assert (tmp_path / schema.RESULTS_CSV).read_bytes() == before
    assert not list(tmp_path.glob(".*partial"))


def test_version_1_is_converted(tmp_path: Path) -> None:
    """Schema 1 had no `family` column and OOD rows without `protocol`; its examples carry k_attack since
    2026-11 and are kept, older ones without it are left out with a note."""
    old = results_table().drop(columns=["family"])
    old.loc[0, "protocol"] = None
    old = pd.concat([old, old.iloc[[0]].assign(attack="paper-bbh-fgsm", protocol="paper-bbh"),
                     old.iloc[[0]].assign(attack="pgd-adaptive-40")], ignore_index=True)  # fmt: skip
    folder = tmp_path / "v1"
    folder.mkdir()
    old.to_csv(folder / schema.RESULTS_CSV, index=False)
    examples = examples_table().drop(columns=["family"])
    examples.to_parquet(folder / schema.EXAMPLES_PARQUET, index=False)
    (folder / schema.META).write_text(json.dumps({"schema_version": 1, "command": "sweep"}))
    run = read_run(folder)
    families = dict(zip(run.results["attack"], run.results["family"], strict=False))
    assert families == {"pgd-40": "pgd", "fgsm": "fgsm", "worst-case": "worst-case", "paper-bbh-fgsm": "paper-bbh-fgsm",
                        "pgd-adaptive-40": "pgd-adaptive"}  # fmt: skip
    assert run.results.loc[0, "protocol"] == "strong"
    assert run.examples is not None and set(run.examples["family"]) == {"pgd"}

    examples.drop(columns=["k_attack"]).to_parquet(folder / schema.EXAMPLES_PARQUET, index=False)
    run = read_run(folder)
    assert run.examples is None and "k_attack" in run.notes[0]
    # A bare results table (no meta.json, as a user may hand the gate) is read as version 1.
    assert read_run(folder / schema.RESULTS_CSV).results["family"].tolist() == run.results["family"].tolist()


@pytest.mark.parametrize("version", [99, 0, "2"])
def test_other_versions_are_refused_in_one_line(tmp_path: Path, version) -> None:
    write_run(tmp_path, results_table(), {**run_meta("r"), "schema_version": version})
    with pytest.raises(UserError, match="schema version") as err:
        read_run(tmp_path)
    assert "\n" not in str(err.value)


def test_broken_folders_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_run(tmp_path / "nope")
    with pytest.raises(UserError, match="holds no results.csv"):
        read_run(tmp_path)
    (tmp_path / schema.META).write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_run(tmp_path)
    (tmp_path / schema.META).write_text("{}")
    results_table().drop(columns=["metric"]).to_csv(tmp_path / schema.RESULTS_CSV, index=False)
    with pytest.raises(UserError, match="lacks column"):
        read_run(tmp_path)
    results_table().iloc[:0].to_csv(tmp_path / schema.RESULTS_CSV, index=False)
    with pytest.raises(UserError, match="holds no rows"):
        read_run(tmp_path)
    # A broken flags file costs the flags (with a note saying so), never the whole run.
    write_run(tmp_path, results_table(), run_meta("r"), None, pd.DataFrame({"what": [1]}))
    run = read_run(tmp_path)
    assert run.flags is None and "flags are not shown" in run.notes[0]


def test_run_of_tables_in_memory() -> None:
    run = Run.of(results_table(), examples_table(), flags_table(), run_meta("mem"))
    assert run.folder is None and run.name == "mem" and run.examples is not None


# ------------------------------------------------------------------------------------------- derived tables


def test_wilson_closed_forms() -> None:
    # p = 0.5, n = 100: centre 0.5, half-width z sqrt(0.25/100 + z^2/40000) / (1 + z^2/100).
    z = 1.959963984540054
    half = z * math.sqrt(0.25 / 100 + z * z / 40000) / (1 + z * z / 100)
    assert wilson(50, 100) == pytest.approx((0.5 - half, 0.5 + half))
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(z * z / (10 + z * z))  # the rule of three's cousin at 0
    with pytest.raises(ValueError):
        wilson(11, 10)
    frame = with_wilson(pd.DataFrame({"value": [0.5, 0.3], "n": [100, np.nan]}))
    assert frame["lo"].iloc[0] == pytest.approx(0.5 - half) and math.isnan(frame["hi"].iloc[1])


def test_detection_aurocs_against_brute_force() -> None:
    examples = examples_table(40)
    table = detection_aurocs(examples)
    for score, (neg, pos) in schema.SCORES.items():
        negatives, positives = examples[neg].to_numpy(), examples[pos].to_numpy()
        # AUROC = P(positive > negative) + P(tie) / 2 over every pair.
        pairs = [(p > q) + 0.5 * (p == q) for p in positives for q in negatives]
        got = table[(table["score"] == score) & (table["subset"] == "all")]["value"].item()
        assert got == pytest.approx(np.mean(pairs))
        wrong = ~examples["adv_correct"].to_numpy()
        pairs = [(p > q) + 0.5 * (p == q) for p in positives[wrong] for q in negatives]
        got = table[(table["score"] == score) & (table["subset"] == "successful")]
        assert got["value"].item() == pytest.approx(np.mean(pairs)) and got["n_positive"].item() == wrong.sum()
    rows = detection_rows(results_table(), examples)
    assert set(rows["metric"]) == set(schema.DETECTION_METRICS) and set(rows["n"]) == {40}
    assert set(rows["family"]) == {"pgd"} and set(rows["dataset"]) == {"mnist5k"}


def test_the_flags_table_is_the_flag_record() -> None:
    from dataclasses import fields

    from robusthyper.sanity import Flag

    assert tuple(f.name for f in fields(Flag)) == schema.FLAG_COLUMNS
