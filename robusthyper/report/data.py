"""Reading a run folder for the report, and the tidy frames every plot and table is drawn from.

Every column name the report relies on is defined here, in one place, so a change in
`robusthyper.evaluate`'s tables is a change of one constant. Frames stay long (tidy) so that seaborn plots
them without reshaping.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robusthyper.errors import UserError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- column names (the report's whole contract)

MODEL, ATTACK, EPS, INPUT, METRIC, VALUE = "model", "attack", "eps", "input", "metric", "value"
NORM, EOT, K_ATTACK, K_EVAL, SEED = "norm", "eot", "k_attack", "k_eval", "seed"
REQUIRED_RESULTS = (MODEL, ATTACK, EPS, INPUT, METRIC, VALUE)
"""Without these the results table cannot be read at all (an incompatible schema)."""
VARIANT_COLUMNS = (NORM, EOT, K_ATTACK)
"""Optional settings that, when they take several values, split an attack into separate curves."""

CLEAN, ADVERSARIAL = "clean", "adversarial"
ACCURACY, ENTROPY, MI = "accuracy", "entropy", "mutual_information"
WORST_CASE = "worst-case"
PROTOCOL = "protocol"
STRONG = "strong"
"""The attack label `robusthyper.evaluate` gives the per-example worst case over attacks."""
OOD = "ood"
"""The attack label of `robusthyper.sweep`'s OOD rows: `input` names the OOD set, `eps` is NaN, `metric` is
`ood_auroc_entropy`, `ood_auroc_mi` (in-distribution vs OOD inputs) or the mean score on OOD inputs."""
OOD_COLUMNS = {"ood_auroc_entropy": "AUROC entropy", "ood_auroc_mi": "AUROC MI",
               "ood_entropy": "mean OOD entropy", "ood_mi": "mean OOD MI"}  # fmt: skip

# Per-example table (examples.parquet / examples.csv).
INDEX = "index"
CLEAN_CORRECT, ADV_CORRECT = "clean_correct", "adv_correct"
CLEAN_ENTROPY, ADV_ENTROPY = "clean_entropy", "adv_entropy"
CLEAN_MI, ADV_MI = "clean_mi", "adv_mi"
CLEAN_CONFIDENCE = "clean_confidence"
"""Optional: max_c p̄_c on the clean input. With it the reliability diagram is the real one; without it the
report falls back to accuracy per bin of predictive entropy."""
REQUIRED_EXAMPLES = (MODEL, ATTACK, EPS, INDEX, CLEAN_CORRECT, ADV_CORRECT, CLEAN_ENTROPY, ADV_ENTROPY,
                     CLEAN_MI, ADV_MI)  # fmt: skip

SCHEMA_KEYS = ("schema_version", "results_schema_version")
"""Keys of meta.json that may carry the results schema version (`robusthyper.results.SCHEMA_VERSION`)."""
SUPPORTED_SCHEMA = 1

RESULTS_FILES = ("results.parquet", "results.csv")
EXAMPLES_FILES = ("examples.parquet", "examples.csv")
META_FILE = "meta.json"
FLAGS_FILE = "flags.csv"
FLAG_COLUMNS = ("code", "severity", "model", "attack", "eps", "message")
"""The columns of a sweep's flags.csv (`robusthyper.sanity.flags_to_frame`) the report shows."""

RELIABILITY_BINS = 10


@dataclass
class Run:
    """A run folder's tables, read and checked: `results` (tidy), `examples` (per example, or None) and
    `meta` (meta.json, {} when absent); `warnings` collects what the report should show."""

    folder: Path
    results: pd.DataFrame
    examples: pd.DataFrame | None
    meta: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        self.warnings.append(message)


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise UserError(
            f"cannot read '{path}' ({type(err).__name__}); is it a robusthyper results file?"
        ) from None


def _schema_version() -> int:
    """The schema `robusthyper.results` writes, if it declares one, else the one this report reads."""
    from robusthyper import results

    return int(getattr(results, "SCHEMA_VERSION", SUPPORTED_SCHEMA))


def load_run(folder: Path | str) -> Run:
    """Read and check a run folder; a missing folder, no results, or an incompatible schema is a UserError."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"run folder '{folder}' does not exist; pass a folder under reports/")
    if not folder.is_dir():
        raise UserError(f"'{folder}' is not a folder; pass a run folder such as reports/<run-id>")
    meta: dict[str, Any] = {}
    meta_path = folder / META_FILE
    if meta_path.is_file():
        try:
            loaded = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"'{meta_path}' is not valid JSON ({err}); re-run the sweep") from None
        if not isinstance(loaded, dict):
            raise UserError(f"'{meta_path}' does not hold a JSON object; re-run the sweep")
        meta = loaded
    for key in SCHEMA_KEYS:
        if key in meta and meta[key] != _schema_version():
            raise UserError(
                f"'{folder}' holds results of schema version {meta[key]!r}; this robusthyper reads version "
                f"{_schema_version()}; re-run the sweep or use the robusthyper that wrote it"
            )
    path = next((folder / name for name in RESULTS_FILES if (folder / name).is_file()), None)
    if path is None:
        raise UserError(f"'{folder}' holds no {' or '.join(RESULTS_FILES)}; is it a run folder?")
    results = _read_table(path)
    missing = [c for c in REQUIRED_RESULTS if c not in results.columns]
    if missing:
        raise UserError(
            f"'{path}' lacks column(s) {', '.join(missing)}: an incompatible results schema; "
            "re-run the sweep with this robusthyper"
        )
    if results.empty:
        raise UserError(f"'{path}' holds no rows; the run produced no results")
    results = results.copy()
    results[VALUE] = pd.to_numeric(results[VALUE], errors="coerce")
    results[EPS] = pd.to_numeric(results[EPS], errors="coerce")
    for column in (MODEL, ATTACK, INPUT, METRIC):
        results[column] = results[column].astype(str)
    run = Run(folder, results, None, meta)
    if not meta:
        run.warn(f"no {META_FILE} in the run folder: the environment is unknown")
    ex_path = next((folder / name for name in EXAMPLES_FILES if (folder / name).is_file()), None)
    if ex_path is None:
        run.warn(
            "no per-example table (examples.parquet): detection AUROC and reliability diagrams are skipped"
        )
    else:
        examples = _read_table(ex_path)
        missing = [c for c in REQUIRED_EXAMPLES if c not in examples.columns]
        if missing:
            run.warn(
                f"{ex_path.name} lacks column(s) {', '.join(missing)}: detection AUROC and reliability "
                "diagrams are skipped"
            )
        else:
            examples = examples.copy()
            examples[MODEL] = examples[MODEL].astype(str)
            examples[ATTACK] = examples[ATTACK].astype(str)
            run.examples = examples
    return run


# ---------------------------------------------------------------- frames for the plots and tables


def sanity_flags(run: Run) -> pd.DataFrame | None:
    """The run's sanity flags (flags.csv, errors first), or None when the run recorded none (an older run
    or a single `attack`); an unreadable file is a warning on the page, not a failure."""
    path = run.folder / FLAGS_FILE
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype={"code": str, "severity": str, "model": str, "attack": str,
                                         "message": str})  # fmt: skip
    except Exception as err:  # noqa: BLE001 - a broken flags file must not cost the whole page
        run.warn(f"cannot read '{path}' ({type(err).__name__}): the sanity flags are not shown")
        return None
    missing = [c for c in FLAG_COLUMNS if c not in frame.columns]
    if missing:
        run.warn(f"'{path}' lacks the column(s) {', '.join(missing)}: the sanity flags are not shown")
        return None
    frame = frame[list(FLAG_COLUMNS)]
    order = (frame["severity"] != "error").to_numpy()
    return frame.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)


def models(results: pd.DataFrame) -> list[str]:
    """Model names in the order they first appear (the run's order, not alphabetical)."""
    return list(dict.fromkeys(results[MODEL]))


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_panel(frame: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """A `panel` column: the attack, plus norm / EOT / K_attack where the run holds several values of them,
    so that no curve silently averages different settings."""
    # Within one (model, attack): a deterministic net's K_attack of 1 beside K = 20 is no separate curve.
    varying = [c for c in VARIANT_COLUMNS if c in reference.columns
               and (reference.groupby([MODEL, ATTACK])[c].nunique(dropna=True) > 1).any()]  # fmt: skip
    panel = frame[ATTACK].astype(str)
    for column in varying:
        if column in frame.columns:
            label = {K_ATTACK: "K"}.get(column, column)
            panel = panel + " · " + label + "=" + frame[column].map(_fmt)
    return frame.assign(panel=panel)


def panel_order(results: pd.DataFrame) -> list[str]:
    """The panels (attacks and their variants) in the order the run first recorded them."""
    rows = results[results[ATTACK] != WORST_CASE]
    return list(dict.fromkeys(add_panel(rows, results)["panel"]))


def _curve_keys(frame: pd.DataFrame) -> list[str]:
    return [MODEL, "panel"] + [c for c in (K_EVAL, SEED) if c in frame.columns]


def per_eps(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """`metric` versus eps per (model, panel) on adversarial inputs, with the clean value at eps 0 when the
    grid has no eps 0 of its own. Columns: model, panel, eps, value, input (+ k_eval, seed if present)."""
    rows = results[(results[METRIC] == metric) & (results[ATTACK] != WORST_CASE)]
    rows = add_panel(rows, results)
    adv = rows[rows[INPUT] == ADVERSARIAL]
    clean = rows[rows[INPUT] == CLEAN]
    keys = _curve_keys(rows)
    starts = clean.sort_values(EPS).drop_duplicates(keys).assign(**{EPS: 0.0})
    have_zero = adv[adv[EPS] == 0][keys].drop_duplicates()
    starts = starts.merge(have_zero, on=keys, how="left", indicator=True)
    starts = starts[starts["_merge"] == "left_only"].drop(columns="_merge")
    out = pd.concat([starts, adv], ignore_index=True)
    return out[[*keys, EPS, VALUE, INPUT]].sort_values([*keys, EPS]).reset_index(drop=True)


def worst_case(results: pd.DataFrame) -> pd.DataFrame:
    """Robust accuracy of the worst case over attacks per (model, norm, eps): the per-example worst case
    when the run recorded one (stronger: each example counts as broken if any attack broke it), else the
    minimum of the attacks' accuracies. Columns: model, norm, eps, value, attacks, source. The papers'
    protocols (column `protocol` other than 'strong') are replayed for comparison and never count."""
    acc = results[(results[METRIC] == ACCURACY) & (results[INPUT] == ADVERSARIAL)]
    if PROTOCOL in acc.columns:
        acc = acc[acc[PROTOCOL].fillna(STRONG) == STRONG]
    if NORM not in acc.columns:
        acc = acc.assign(**{NORM: "?"})
    keys = [MODEL, NORM, EPS]
    per_example = acc[acc[ATTACK] == WORST_CASE].groupby(keys, as_index=False, sort=False)[VALUE].min()
    attacks = acc[acc[ATTACK] != WORST_CASE]
    minimum = attacks.groupby(keys, as_index=False, sort=False).agg(
        value=(VALUE, "min"), attacks=(ATTACK, lambda s: ", ".join(dict.fromkeys(s)))
    )
    out = minimum.merge(per_example.rename(columns={VALUE: "per_example"}), on=keys, how="left")
    has = out["per_example"].notna()
    out["source"] = np.where(has, "per-example worst case", "minimum over attacks")
    out[VALUE] = np.where(has, out["per_example"], out[VALUE])
    out = out.drop(columns="per_example")
    order = pd.Categorical(out[MODEL], categories=models(results), ordered=True)
    return (
        out.assign(_order=order)
        .sort_values(["_order", NORM, EPS])
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def detection(examples: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Detection AUROC (clean negatives vs adversarial positives), scored by entropy and by MI, per (model,
    panel, eps), on all adversarial examples and on successful ones only (clean correct, adversarial wrong).
    Columns: model, panel, eps, score, subset, value, n_positive."""
    import torch

    from robusthyper.metrics import auroc

    frame = add_panel(examples[examples[ATTACK] != WORST_CASE], reference)
    keys = _curve_keys(frame) + [EPS]
    rows = []
    for key, group in frame.groupby(keys, sort=False):
        info = dict(zip(keys, key, strict=True))
        success = group[CLEAN_CORRECT].astype(bool) & ~group[ADV_CORRECT].astype(bool)
        for score, (neg, pos) in {"entropy": (CLEAN_ENTROPY, ADV_ENTROPY), "MI": (CLEAN_MI, ADV_MI)}.items():
            negatives = torch.tensor(group[neg].to_numpy(dtype=float))
            for subset, mask in (("all", np.ones(len(group), bool)), ("successful", success.to_numpy())):
                positives = torch.tensor(group[pos].to_numpy(dtype=float)[mask])
                value = auroc(negatives, positives) if len(positives) else float("nan")
                rows.append(
                    {**info, "score": score, "subset": subset, VALUE: value, "n_positive": len(positives)}
                )
    return pd.DataFrame(rows)


def reliability(examples: pd.DataFrame, model: str, n_bins: int = RELIABILITY_BINS) -> dict[str, Any]:
    """Clean-input reliability data of `model`: per bin, mean score, accuracy and count.

    With `clean_confidence` the bins are the confidence bins (lo, hi] of width 1/n_bins that torchmetrics
    and `robusthyper.metrics.reliability_bins` use, and `ece` is their ECE. Without it, equal-count bins of
    predictive entropy (`kind` says which)."""
    rows = examples[examples[MODEL] == model]
    subset = [c for c in (K_EVAL, SEED) if c in rows.columns]
    if subset:  # the clean outcomes repeat for every attack; keep one evaluation (the first K_eval, seed)
        first = rows.iloc[0]
        for column in subset:
            rows = rows[rows[column] == first[column]]
    rows = rows.drop_duplicates(INDEX)
    correct = rows[CLEAN_CORRECT].to_numpy(dtype=float)
    if CLEAN_CONFIDENCE in rows.columns and rows[CLEAN_CONFIDENCE].notna().all():
        conf = rows[CLEAN_CONFIDENCE].to_numpy(dtype=float)
        index = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
        count = np.bincount(index, minlength=n_bins).astype(float)
        safe = np.maximum(count, 1)
        mean_conf = np.bincount(index, weights=conf, minlength=n_bins) / safe
        acc = np.bincount(index, weights=correct, minlength=n_bins) / safe
        ece = float(np.sum(count * np.abs(acc - mean_conf)) / max(len(conf), 1))
        return {"kind": "confidence", "lower": np.arange(n_bins) / n_bins, "width": 1 / n_bins,
                "score": mean_conf, "accuracy": acc, "count": count, "ece": ece, "n": len(conf)}  # fmt: skip
    entropy = rows[CLEAN_ENTROPY].to_numpy(dtype=float)
    order = np.argsort(entropy, kind="stable")
    chunks = [c for c in np.array_split(order, min(n_bins, max(len(order), 1))) if len(c)]
    return {
        "kind": "entropy",
        "score": np.array([entropy[c].mean() for c in chunks]),
        "accuracy": np.array([correct[c].mean() for c in chunks]),
        "count": np.array([len(c) for c in chunks], dtype=float),
        "ece": None,
        "n": len(entropy),
    }


def split_ood(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the attack rows, the OOD rows): OOD rows have no eps and go to their own table and plot."""
    is_ood = results[ATTACK] == OOD
    return results[~is_ood].reset_index(drop=True), results[is_ood].reset_index(drop=True)


def ood_table(ood: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, OOD set): detection AUROCs by entropy and MI and the mean scores on OOD inputs."""
    if ood.empty:
        return pd.DataFrame()
    keys = [c for c in (MODEL, INPUT, "n", K_EVAL, SEED) if c in ood.columns]
    wide = ood.pivot_table(index=keys, columns=METRIC, values=VALUE, aggfunc="first", sort=False)
    wide = wide[[c for c in OOD_COLUMNS if c in wide.columns]].rename(columns=OOD_COLUMNS).reset_index()
    wide.columns.name = None
    return wide.rename(columns={INPUT: "OOD set"})


def numbers(results: pd.DataFrame) -> pd.DataFrame:
    """The numbers table: one row per (model, attack, settings, eps), one column per input and metric."""
    keys = [c for c in (MODEL, ATTACK, NORM, EOT, K_ATTACK, K_EVAL, SEED, EPS) if c in results.columns]
    frame = results.assign(column=results[INPUT].astype(str) + " " + results[METRIC].astype(str))
    wide = frame.pivot_table(
        index=keys, columns="column", values=VALUE, aggfunc="first", dropna=False, sort=False
    )
    wide = wide.dropna(how="all").reset_index()
    metrics_order = list(dict.fromkeys(results[METRIC]))
    columns = [f"{i} {m}" for m in metrics_order for i in (CLEAN, ADVERSARIAL) if f"{i} {m}" in wide.columns]
    return wide[[*keys, *columns]]


def settings(results: pd.DataFrame) -> pd.DataFrame:
    """Every setting of the run, one row per distinct combination; the models, the eps grid and the step
    sizes (which follow eps) are collapsed into lists."""
    lists = {MODEL: "models", EPS: "eps", "step_size": "step_size"}
    drop = {INPUT, METRIC, VALUE, "posterior", *lists}
    columns = [c for c in results.columns if c not in drop]
    if not columns:
        return pd.DataFrame()

    def joined(values: pd.Series) -> str:
        return ", ".join(_fmt(v) for v in dict.fromkeys(values.dropna()))

    grouped = results.groupby(columns, sort=False, dropna=False)
    aggs = {label: (column, joined) for column, label in lists.items() if column in results.columns}
    return grouped.agg(**aggs).reset_index()


def seeds(results: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    found = sorted({str(v) for v in results[SEED].dropna()}) if SEED in results.columns else []
    for key in ("seed", "seeds"):
        if key in meta:
            value = meta[key]
            found += [str(v) for v in (value if isinstance(value, list) else [value]) if str(v) not in found]
    return found
