"""The words of a run folder: its files, the columns of its tables, and the values those columns take.

Every module that writes or reads a run folder (`robusthyper.run.folder`) or a table in it (the evaluation,
the sweep, sanity flags, the gate, the report) takes its names from here, so that a change to the layout is
a change in one place and a bump of `SCHEMA_VERSION`.

Version history (`robusthyper.run.folder.read_run` converts older folders, see `convert_v1`):
- 1: results, examples, flags and meta.json as written up to 2026-11.
- 2: every results and examples row names its attack `family` (the registered family, or the derived
  attack's own word for `worst-case`, `ood` and `gradient-check`) and its `protocol`; readers never parse
  an attack label. Examples always carry `k_attack`.
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 2

# ------------------------------------------------------------------------------------------------- files

RESULTS_CSV: Final = "results.csv"
RESULTS_PARQUET: Final = "results.parquet"
EXAMPLES_PARQUET: Final = "examples.parquet"
EXAMPLES_CSV: Final = "examples.csv"
"""Written only where pyarrow is missing; readers take parquet first."""
FLAGS_CSV: Final = "flags.csv"
"""The sanity flags (`robusthyper.sanity.flags_to_frame`), one row per flag; headers only when clean."""
META: Final = "meta.json"
CELLS: Final = "cells"
"""A sweep's per-cell records (`robusthyper.pipeline.cells`)."""
DEFAULT_REPORTS: Final = "reports"

# ------------------------------------------------------------------------------------------------- results

MODEL, POSTERIOR, DATASET, N = "model", "posterior", "dataset", "n"
ATTACK, FAMILY, PROTOCOL = "attack", "family", "protocol"
"""`attack` is a label ('pgd-40', 'fgsm'); `family` the registered family ('pgd'); `protocol` 'strong' or
one of the papers' own protocols ('paper-bhn', 'paper-bbh')."""
NORM, EPS, STEPS, STEP_SIZE, RESTARTS, RANDOM_INIT = "norm", "eps", "steps", "step_size", "restarts", "random_init"
EOT, K_ATTACK, K_EVAL, SEED = "eot", "k_attack", "k_eval", "seed"
INPUT, METRIC, VALUE = "input", "metric", "value"

RESULT_COLUMNS: Final = (MODEL, POSTERIOR, DATASET, N, ATTACK, FAMILY, NORM, EPS, STEPS, STEP_SIZE, RESTARTS,
                         RANDOM_INIT, EOT, K_ATTACK, K_EVAL, SEED, PROTOCOL, INPUT, METRIC, VALUE)  # fmt: skip
"""Every column of a results table, in the order they are written."""
REQUIRED_RESULTS: Final = (MODEL, ATTACK, EPS, INPUT, METRIC, VALUE)
"""Without these a table cannot be read at all (not a robusthyper results table)."""
SETTING_COLUMNS: Final = (NORM, EOT, K_ATTACK, K_EVAL, SEED)
"""Settings a gate rule may filter on."""

# Inputs.
CLEAN, ADVERSARIAL = "clean", "adversarial"
"""An OOD row's input is the name of its OOD set."""

# Metrics.
ACCURACY, NLL, ENTROPY, MI = "accuracy", "nll", "entropy", "mutual_information"
INPUT_METRICS: Final = (ACCURACY, NLL, ENTROPY, MI)
"""Means over the n examples, on clean and on adversarial inputs."""
MAX_PERTURBATION, SECONDS = "max_perturbation", "seconds"
"""Adversarial rows only: the largest norm of a perturbation, and the attack's seconds (timing)."""
TIMING_METRICS: Final = (SECONDS,)
OOD_AUROC: Final = {"entropy": "ood_auroc_entropy", "mi": "ood_auroc_mi"}
"""Detection score -> AUROC of in-distribution (negative) vs OOD (positive) inputs."""
OOD_MEAN: Final = {"entropy": "ood_entropy", "mi": "ood_mi"}
"""Detection score -> its mean on the OOD inputs."""
OOD_METRICS: Final = (*OOD_AUROC.values(), *OOD_MEAN.values())
DETECTION_AUROC: Final = {"entropy": "detection_auroc_entropy", "mi": "detection_auroc_mi"}
"""Detection score -> AUROC of clean (negative) vs adversarial (positive) inputs, derived from the examples
(`robusthyper.run.tables.detection_aurocs`); a gate rule may name them."""
DETECTION_METRICS: Final = tuple(DETECTION_AUROC.values())
GRADIENT_METRICS: Final = ("grad_zero_fraction", "grad_nan_fraction", "grad_inf_fraction", "grad_abs_mean")
"""The gradient probe's numbers (`robusthyper.sanity.gradient_health`); they feed the sanity flags."""

# Derived attacks: rows that are not one attack's.
WORST_CASE: Final = "worst-case"
"""Per example, the worst outcome over the strong attacks at one (norm, eps, K_eval, seed)."""
OOD: Final = "ood"
"""OOD detection rows: `input` names the OOD set, `eps` is NaN."""
GRADIENT_CHECK: Final = "gradient-check"
"""The gradient probe's rows (kept out of results.csv; the sanity flags read them)."""
STRONG: Final = "strong"
"""The protocol of every attack but the papers' own."""

# ------------------------------------------------------------------------------------------------- examples

INDEX = "index"
CLEAN_CORRECT, ADV_CORRECT = "clean_correct", "adv_correct"
CLEAN_NLL, ADV_NLL = "clean_nll", "adv_nll"
CLEAN_ENTROPY, ADV_ENTROPY = "clean_entropy", "adv_entropy"
CLEAN_MI, ADV_MI = "clean_mi", "adv_mi"
CLEAN_CONFIDENCE, ADV_CONFIDENCE = "clean_confidence", "adv_confidence"
"""max_c p̄_c, the model average's confidence in its prediction (reliability diagrams)."""
PERTURBATION = "perturbation"
EXAMPLE_COLUMNS: Final = (MODEL, ATTACK, FAMILY, NORM, EPS, K_ATTACK, PROTOCOL, K_EVAL, SEED, INDEX,
                          CLEAN_CORRECT, ADV_CORRECT, CLEAN_ENTROPY, ADV_ENTROPY, CLEAN_MI, ADV_MI, CLEAN_NLL,
                          ADV_NLL, CLEAN_CONFIDENCE, ADV_CONFIDENCE, PERTURBATION)  # fmt: skip
"""One row per (attack cell, example)."""
REQUIRED_EXAMPLES: Final = (MODEL, ATTACK, EPS, K_ATTACK, INDEX, CLEAN_CORRECT, ADV_CORRECT, CLEAN_ENTROPY,
                            ADV_ENTROPY, CLEAN_MI, ADV_MI)  # fmt: skip
EXAMPLE_KEYS: Final = (MODEL, ATTACK, NORM, EPS, K_ATTACK, K_EVAL, SEED)
"""The columns that name one attack cell's block of examples."""
SCORES: Final = {"entropy": (CLEAN_ENTROPY, ADV_ENTROPY), "mi": (CLEAN_MI, ADV_MI)}
"""Detection score -> its (clean, adversarial) columns."""

# ------------------------------------------------------------------------------------------------- flags

FLAG_COLUMNS: Final = ("code", "severity", "model", "attack", "eps", "message")
"""The columns of flags.csv (`robusthyper.sanity.Flag`'s fields)."""
