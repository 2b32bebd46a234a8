"""Evaluation in memory: every (model, attack, eps) on the same n test examples, as a tidy table.

`run` is the Python API's way to evaluate models without a run folder: the same pipeline as a sweep
(`robusthyper.pipeline`: plan -> execute -> assemble, each cell computed by `robusthyper.compute`), so its
tables equal a sweep's. The results table has one row per (model, attack, eps, input, metric) with every
setting in the row (`robusthyper.run.schema.RESULT_COLUMNS`), the per-example worst case over attacks, and
the sanity flags (`robusthyper.sanity`) beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from robusthyper.attacks import AttackSpec
from robusthyper.data import Split
from robusthyper.loading import ModelUnderTest
from robusthyper.sanity import Flag


@dataclass
class Evaluation:
    """What `run` returns: the tidy table, per-example outcomes, the sanity flags and the run's settings."""

    results: pd.DataFrame
    examples: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)
    gradient_health: dict[str, dict[str, float]] = field(default_factory=dict)


def run(
    models: Sequence[ModelUnderTest],
    specs: Sequence[AttackSpec],
    split: Split,
    *,
    dataset: str,
    n: int | None = None,
    batch_size: int = 128,
    progress: bool | None = None,
) -> Evaluation:
    """Evaluate every model under every spec on the first `n` examples of `split` (default all).

    Returns an `Evaluation` whose `results` has one row per (model, attack, eps, input, metric) with the
    settings in every row, and whose `examples` holds per-example outcomes (for detection AUROCs, gates)."""
    from robusthyper import pipeline

    done = pipeline.evaluate(models, specs, split, dataset=dataset, n=n, batch_size=batch_size,
                             progress=progress)  # fmt: skip
    tables = done.tables
    settings = {"dataset": dataset, "n": done.plan.cells[0].payload["n"], "batch_size": batch_size,
                "specs": [s.settings() for s in specs]}  # fmt: skip
    return Evaluation(tables.results, tables.examples, settings, tables.flags, tables.health)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, attack, norm, eps, eot, K_attack, K_eval): clean and robust accuracy, NLL,
    entropy and mutual information on clean and adversarial inputs, and the attack's seconds."""
    keys = ["model", "attack", "norm", "eps", "eot", "k_attack", "k_eval"]
    frame = results.assign(column=results["input"].str[:3] + "_" + results["metric"])
    wide = frame.pivot_table(index=keys, columns="column", values="value", aggfunc="first")
    wide = wide.reset_index().rename(columns={"cle_accuracy": "clean_acc", "adv_accuracy": "robust_acc"})
    wide.columns.name = None
    order = ["clean_acc", "robust_acc", "cle_nll", "adv_nll", "cle_entropy", "adv_entropy",
             "cle_mutual_information", "adv_mutual_information", "adv_seconds"]  # fmt: skip
    wide = wide[[c for c in [*keys, *order] if c in wide.columns]]
    wide = wide.dropna(subset=["robust_acc"]) if "robust_acc" in wide else wide
    return wide.rename(columns=lambda c: c.replace("cle_", "clean_").replace("mutual_information", "mi"))
