"""Reading a run folder for the report, and the tidy frames every plot and table is drawn from.

Every column name the report relies on is defined here, in one place, so a change in
`robusthyper.evaluate`'s tables is a change of one constant. Frames stay long (tidy) so that seaborn plots
them without reshaping.
"""

from __future__ import annotations

import json
import logging
import math
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
"""The attack label `robusthyper.evaluate` gives the per-example worst case over attacks."""
PROTOCOL = "protocol"
STRONG = "strong"
"""`protocol` of every attack but the papers' own (weak) ones ('paper-bhn', 'paper-bbh')."""
PAPER_PREFIX = "paper-"
"""Attack labels of the papers' protocols start with it (`paper-bhn-fgsm`, `paper-bbh-fgsm`)."""
PGD, ADAPTIVE = "pgd", "pgd-adaptive"
"""Attack families (labels without their step count) of plain PGD and of the adaptive PGD."""
N_COLUMN, RESTARTS = "n", "restarts"
DETECTION_FPR = 0.05
"""False-positive rate on clean inputs at which the detection-aware tables set the flag threshold."""
Z95 = 1.959963984540054
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


# ---------------------------------------------------------------- honest evaluation: EOT, adaptive, papers


def family(label: Any) -> str:
    """An attack label without its step count: 'pgd-40' -> 'pgd', 'pgd-adaptive-20' -> 'pgd-adaptive'."""
    from robusthyper.attacks import family_of_label

    return family_of_label(label)


def is_paper(frame: pd.DataFrame) -> pd.Series:
    """Rows of the papers' own protocols: `protocol` other than 'strong', or (older runs) a 'paper-' label."""
    by_label = frame[ATTACK].astype(str).str.startswith(PAPER_PREFIX)
    if PROTOCOL not in frame.columns:
        return by_label
    return (frame[PROTOCOL].fillna(STRONG).astype(str) != STRONG) | by_label


def _present(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[str]:
    return [c for c in columns if c in frame.columns]


def _variant_keys(frame: pd.DataFrame) -> list[str]:
    """What makes one robustness curve besides K_attack and eps."""
    return _present(frame, (MODEL, ATTACK, NORM, EOT, K_EVAL, SEED, RESTARTS))


def study_points(results: pd.DataFrame) -> pd.DataFrame:
    """The K_attack variants that are only points of an EOT study, not curves of their own: per (model,
    attack, settings) with several K_attack values, the main K is the one with the most eps > 0 (ties: the
    largest K); any other K with a single eps is a study point. Columns: the curve keys and k_attack."""
    keys = _variant_keys(results)
    if K_ATTACK not in results.columns:
        return pd.DataFrame(columns=[*keys, K_ATTACK])
    adv = results[(results[INPUT] == ADVERSARIAL) & (results[ATTACK] != WORST_CASE) & (results[EPS] > 0)]
    counts = adv.groupby([*keys, K_ATTACK], dropna=False, sort=False)[EPS].nunique().reset_index(name="n_eps")
    found = []
    for _, group in counts.groupby(keys, dropna=False, sort=False):
        if len(group) < 2:
            continue
        main = group.sort_values(["n_eps", K_ATTACK]).iloc[-1][K_ATTACK]
        found.append(group[(group[K_ATTACK] != main) & (group["n_eps"] <= 1)])
    if not found:
        return pd.DataFrame(columns=[*keys, K_ATTACK])
    return pd.concat(found, ignore_index=True)[[*keys, K_ATTACK]]


def _drop_matching(frame: pd.DataFrame, drop: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in drop.columns if c in frame.columns]
    if drop.empty or not keys:
        return frame
    marked = frame.reset_index(drop=True).merge(drop[keys].drop_duplicates().assign(_drop=True), on=keys,
                                                 how="left")  # fmt: skip
    return frame[~marked["_drop"].fillna(False).astype(bool).to_numpy()]


def main_grid(results: pd.DataFrame) -> pd.DataFrame:
    """The rows the per-eps figures (robust accuracy, entropy and MI, detection AUROC) draw: everything but
    the papers' protocols (shown beside the strong protocol in their own section, where they cannot be
    mistaken for robustness) and the points of an EOT study (single-eps K_attack variants, shown in the
    EOT convergence section; as curves they would add one near-empty panel per K). Rows that repeat the
    same settings (a deterministic net records K_attack = 1 for every K of a study) are kept once."""
    rows = results[~is_paper(results)]
    rows = _drop_matching(rows, study_points(rows))
    same = [c for c in rows.columns if c != VALUE]
    return rows.drop_duplicates(subset=same).reset_index(drop=True)


def with_k_attack(examples: pd.DataFrame, results: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The per-example table with a `k_attack` column, and warnings.

    Runs whose examples lack the column (it is not in `robusthyper.evaluate`'s per-example table) record
    several K_attack of one (model, attack, eps) as consecutive blocks of n rows, in the same order as their
    result rows. Each block is matched to its result row and checked: its mean `adv_correct` must equal that
    row's robust accuracy. Blocks that cannot be matched are left out (a mixture of K_attack would blur
    every per-example number) and a warning says so; without `k_attack` in the results it stays NaN. Of
    blocks with the same K (a deterministic net records K_attack = 1 for every K of an EOT study) the first
    recorded, the main grid's, is kept.
    """
    if K_ATTACK in examples.columns:
        return examples, []
    out = np.full(len(examples), np.nan)
    unmatched = np.zeros(len(examples), dtype=bool)
    warnings: list[str] = []
    keys = [c for c in (MODEL, ATTACK, NORM, EPS, K_EVAL, SEED) if c in examples.columns and c in results]
    acc = results[(results[METRIC] == ACCURACY) & (results[INPUT] == ADVERSARIAL)]
    if K_ATTACK not in acc.columns or examples.empty:
        return examples.assign(**{K_ATTACK: out}), warnings
    lookup = {key: (list(group[K_ATTACK]), list(group[VALUE]))
              for key, group in acc.groupby(keys, sort=False, dropna=False)}  # fmt: skip
    correct = examples[ADV_CORRECT].to_numpy(dtype=float)
    index = examples[INDEX].to_numpy()
    for key, positions in examples.groupby(keys, sort=False, dropna=False).indices.items():
        ks, values = lookup.get(key, ([], []))
        if not ks:
            continue
        if len(ks) == 1:
            out[positions] = ks[0]
            continue
        size, rest = divmod(len(positions), len(ks))
        blocks = [positions[i * size : (i + 1) * size] for i in range(len(ks))]
        if not rest and all(len(np.unique(index[b])) == size and abs(correct[b].mean() - v) < 1e-9
                            for b, v in zip(blocks, values, strict=True)):  # fmt: skip
            seen: set[Any] = set()
            for block, k in zip(blocks, ks, strict=True):
                out[block] = k
                # The same K twice (a deterministic net records K_attack = 1 for every K of a study): the
                # first block, from the main grid, stands for them all.
                unmatched[block] = k in seen
                seen.add(k)
        else:
            unmatched[positions] = True
            info = dict(zip(keys, key, strict=True))
            warnings.append(
                f"the per-example rows of {info.get(MODEL)} {info.get(ATTACK)} eps={_fmt(info.get(EPS))} "
                f"cannot be matched to their K_attack ({', '.join(_fmt(k) for k in ks)}): the detection "
                "tables and AUROCs leave them out"
            )
    return examples.assign(**{K_ATTACK: out})[~unmatched].reset_index(drop=True), warnings


def main_examples(examples: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """The per-example rows of `main_grid` (examples with `k_attack`, from `with_k_attack`)."""
    rows = examples[~is_paper(examples)]
    drop = study_points(results[~is_paper(results)])
    drop = drop[[c for c in drop.columns if c in rows.columns]]
    rows = _drop_matching(rows, drop)
    same = _present(rows, (MODEL, ATTACK, NORM, EPS, K_EVAL, SEED, K_ATTACK, INDEX))
    return rows.drop_duplicates(subset=same).reset_index(drop=True)


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial proportion (NaN, NaN when n is unknown or 0)."""
    if not n or not math.isfinite(n) or n <= 0:
        return math.nan, math.nan
    p = min(max(successes / n, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _with_wilson(frame: pd.DataFrame) -> pd.DataFrame:
    n = frame[N_COLUMN] if N_COLUMN in frame.columns else pd.Series(np.nan, index=frame.index)
    bounds = [wilson(round(v * m), m) if pd.notna(m) else (math.nan, math.nan)
              for v, m in zip(frame[VALUE], pd.to_numeric(n, errors="coerce"), strict=True)]  # fmt: skip
    return frame.assign(lo=[b[0] for b in bounds], hi=[b[1] for b in bounds])


def eot_study(results: pd.DataFrame) -> pd.DataFrame:
    """Robust accuracy against K_attack for every (attack, eps, settings) at which some model was attacked
    with two or more K_attack values (strong protocol only). Every model attacked there is kept: a
    deterministic net (always K = 1) is a flat reference. Columns: model, panel, attack, norm, eps,
    k_attack, value, n, lo, hi (Wilson 95% interval), n_k (how many K the model has in this panel)."""
    acc = results[(results[METRIC] == ACCURACY) & (results[INPUT] == ADVERSARIAL)
                  & (results[ATTACK] != WORST_CASE) & (results[EPS] > 0)]  # fmt: skip
    acc = acc[~is_paper(acc)]
    if acc.empty or K_ATTACK not in acc.columns:
        return pd.DataFrame()
    study = _present(acc, (ATTACK, NORM, EOT, EPS, K_EVAL, SEED, RESTARTS))
    per_model = acc.groupby([*study, MODEL], dropna=False)[K_ATTACK].nunique()
    wanted = per_model[per_model >= 2].reset_index()[study].drop_duplicates()
    if wanted.empty:
        return pd.DataFrame()
    rows = acc.merge(wanted, on=study, how="inner")
    agg = {VALUE: (VALUE, "first")}  # a K repeated (a deterministic net's K = 1): the main grid's row
    if N_COLUMN in rows.columns:
        agg[N_COLUMN] = (N_COLUMN, "max")
    rows = rows.groupby([*study, MODEL, K_ATTACK], dropna=False, sort=False).agg(**agg).reset_index()
    rows = _with_wilson(rows)
    many = [c for c in (NORM, EOT, K_EVAL, SEED) if c in rows.columns and rows[c].nunique(dropna=True) > 1]
    label = rows[ATTACK].astype(str) + " at ε=" + rows[EPS].map(_fmt)
    for column in many:
        label = label + " · " + column + "=" + rows[column].map(_fmt)
    rows = rows.assign(panel=label)
    rows["n_k"] = rows.groupby(["panel", MODEL])[K_ATTACK].transform("nunique")
    order = {m: i for i, m in enumerate(models(results))}
    rows = rows.assign(_order=rows[MODEL].map(order)).sort_values(["panel", "_order", K_ATTACK])
    return rows.drop(columns="_order").reset_index(drop=True)


def eot_table(study: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, panel): robust accuracy at each K_attack, the change from the smallest to the
    largest K and at the last step (the convergence check: doubling K should no longer lower it)."""
    if study.empty:
        return pd.DataFrame()
    rows = []
    for (panel, model), group in study.groupby(["panel", MODEL], sort=False):
        group = group.sort_values(K_ATTACK)
        row: dict[str, Any] = {MODEL: model, "attack, ε": panel}
        if N_COLUMN in group.columns:
            row[N_COLUMN] = group[N_COLUMN].max()
        for k, value in zip(group[K_ATTACK], group[VALUE], strict=True):
            row[f"K={_fmt(int(k)) if float(k).is_integer() else _fmt(k)}"] = value
        values = group[VALUE].to_list()
        row["largest − smallest K"] = values[-1] - values[0] if len(values) > 1 else math.nan
        row["last step"] = values[-1] - values[-2] if len(values) > 1 else math.nan
        rows.append(row)
    frame = pd.DataFrame(rows)
    ks = sorted((c for c in frame.columns if c.startswith("K=")), key=lambda c: float(c[2:]))
    front = [c for c in (MODEL, "attack, ε", N_COLUMN) if c in frame.columns]
    return frame[[*front, *ks, "largest − smallest K", "last step"]]


def _adaptive_partner(label: str, labels: list[str]) -> str | None:
    """The plain PGD label to compare adaptive `label` with: same steps if recorded, else the first PGD."""
    same = label.replace(ADAPTIVE, PGD, 1)
    if same in labels:
        return same
    return next((other for other in labels if family(other) == PGD), None)


def detection_aware(examples: pd.DataFrame, fpr: float = DETECTION_FPR) -> pd.DataFrame:
    """Detection-aware robust accuracy (`robusthyper.attacks.adaptive.detection_table`) of the adaptive PGD
    and of plain PGD at the same (model, norm, eps, K_eval, seed, K_attack where possible), by MI and by
    entropy. `examples` needs `k_attack` (`with_k_attack`). Long: model, norm, eps, score, kind
    ('pgd' / 'adaptive'), attack, k_attack, robust_acc, detection_aware_acc, flagged, threshold, n."""
    from robusthyper.attacks.adaptive import detection_table

    if examples.empty:
        return pd.DataFrame()
    examples = examples[examples[ATTACK] != WORST_CASE]
    same = _present(examples, (MODEL, ATTACK, NORM, EPS, K_EVAL, SEED, K_ATTACK, INDEX))
    examples = examples.drop_duplicates(subset=same)
    fam = examples[ATTACK].map(family)
    adaptive = examples[fam == ADAPTIVE]
    if adaptive.empty:
        return pd.DataFrame()
    labels = list(dict.fromkeys(examples[ATTACK]))
    keys = _present(examples, (MODEL, NORM, EPS, K_EVAL, SEED))
    out = []
    for (label, k), group in adaptive.groupby([ATTACK, K_ATTACK], sort=False, dropna=False):
        partner = _adaptive_partner(str(label), labels)
        pieces = [("adaptive", group)]
        if partner is not None:
            plain = examples[examples[ATTACK] == partner].merge(group[keys].drop_duplicates(), on=keys)
            if not plain.empty:
                # the same K_attack as the adaptive attack where recorded, else the nearest one (per group)
                plain = plain.assign(_dist=(plain[K_ATTACK] - k).abs().fillna(np.inf))
                nearest = plain.groupby(keys, dropna=False)["_dist"].transform("min")
                plain = plain[plain["_dist"] == nearest]
                chosen = plain.groupby(keys, dropna=False)[K_ATTACK].transform("max")
                plain = plain[(plain[K_ATTACK] == chosen) | chosen.isna()].drop(columns="_dist")
                pieces.append(("pgd", plain))
        if len(pieces) == 2:
            pieces.append(("worst", _worst_of_both(pieces[0][1], pieces[1][1], keys, fpr)))
        for kind, rows in pieces:
            if kind == "worst":
                out.append(rows)
                continue
            k_used = rows.groupby(keys, dropna=False)[K_ATTACK].max().rename(K_ATTACK).reset_index()
            counts = rows.groupby(keys, dropna=False).size().rename(N_COLUMN).reset_index()
            for score in ("mi", "entropy"):
                table = detection_table(rows, score=score, fpr=fpr)
                if table.empty:
                    continue
                table = table.merge(k_used, on=keys, how="left").merge(counts, on=keys, how="left")
                out.append(table.assign(kind=kind, score="MI" if score == "mi" else "entropy"))
    if not out:
        return pd.DataFrame()
    frame = pd.concat(out, ignore_index=True)
    order = {m: i for i, m in enumerate(dict.fromkeys(examples[MODEL]))}
    frame = frame.assign(_order=frame[MODEL].map(order)).sort_values(["_order", "score", EPS, "kind"])
    columns = [*keys, "score", "kind", ATTACK, K_ATTACK, "robust_acc", "detection_aware_acc", "flagged",
               "threshold", N_COLUMN]  # fmt: skip
    return frame[[c for c in columns if c in frame.columns]].reset_index(drop=True)


def _worst_of_both(adaptive: pd.DataFrame, plain: pd.DataFrame, keys: list[str], fpr: float) -> pd.DataFrame:
    """Per example, defended only when defended against *both* attacks (each attack's own clean threshold):
    the honest figure, since an attacker picks whichever of the two works on that input. Rows as
    `detection_aware`'s, kind 'worst'."""
    from robusthyper.attacks.adaptive import detection_threshold

    rows = []
    for key, a in adaptive.groupby(keys, dropna=False):
        values = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        p = plain.merge(pd.DataFrame([values]), on=keys)
        both = a.merge(p, on=INDEX, suffixes=("_a", "_p"))
        if both.empty:
            continue
        for score in ("mi", "entropy"):
            defended, flagged = np.ones(len(both), bool), np.zeros(len(both), bool)
            for side in ("a", "p"):
                threshold = detection_threshold(both[f"clean_{score}_{side}"].to_numpy(), fpr)
                hit = both[f"adv_{score}_{side}"].to_numpy() > threshold
                correct = both[f"{ADV_CORRECT}_{side}"].to_numpy().astype(bool)
                defended &= correct | hit
                flagged |= hit
            correct = both[f"{ADV_CORRECT}_a"].to_numpy().astype(bool) & both[
                f"{ADV_CORRECT}_p"
            ].to_numpy().astype(bool)
            rows.append({**values, "score": "MI" if score == "mi" else "entropy", "kind": "worst",
                         "robust_acc": float(correct.mean()), "detection_aware_acc": float(defended.mean()),
                         "flagged": float(flagged.mean()), N_COLUMN: len(both),
                         K_ATTACK: a[K_ATTACK].max() if K_ATTACK in a else np.nan})  # fmt: skip
    return pd.DataFrame(rows)


def detection_aware_table(frame: pd.DataFrame) -> pd.DataFrame:
    """`detection_aware` side by side: per (model, eps, score) plain PGD's and the adaptive attack's robust
    accuracy, detection-aware accuracy and share flagged, and the difference adaptive − PGD."""
    if frame.empty:
        return pd.DataFrame()
    keys = [c for c in (MODEL, NORM, EPS, K_EVAL, SEED, "score") if c in frame.columns]
    wide = frame.pivot_table(index=keys, columns="kind", values=["robust_acc", "detection_aware_acc",
                             "flagged", K_ATTACK], aggfunc="first", sort=False, dropna=False)  # fmt: skip
    out = wide.index.to_frame(index=False)
    names = {"robust_acc": "robust acc", "detection_aware_acc": "detection-aware acc", "flagged": "flagged"}

    def col(value: str, kind: str) -> pd.Series:
        if (value, kind) in wide.columns:
            return wide[(value, kind)].to_numpy()
        return np.full(len(wide), np.nan)

    out["K_attack"] = col(K_ATTACK, "adaptive")
    for value, name in names.items():
        out[f"{name} (PGD)"] = col(value, "pgd")
        out[f"{name} (adaptive)"] = col(value, "adaptive")
    out["Δ detection-aware acc (adaptive − PGD)"] = (
        out["detection-aware acc (adaptive)"] - out["detection-aware acc (PGD)"]
    )
    out["detection-aware acc (worst of both)"] = col("detection_aware_acc", "worst")
    order = [*keys, "K_attack"]
    for name in names.values():
        order += [f"{name} (PGD)", f"{name} (adaptive)"]
        if name == "detection-aware acc":
            order += ["Δ detection-aware acc (adaptive − PGD)", "detection-aware acc (worst of both)"]
    drop = [c for c in (K_EVAL, SEED, NORM) if c in out.columns and out[c].nunique(dropna=True) <= 1]
    return out[order].drop(columns=drop).rename(columns={EPS: "ε"})


def paper_vs_strong(results: pd.DataFrame) -> pd.DataFrame:
    """Per (model, paper protocol, eps): the protocol's robust accuracy beside the strong protocol's (the
    per-example worst case over the strong attacks, `worst_case`), and `difference` = paper − strong: how
    much the weak protocol overstates robustness. Columns: model, protocol, attack, norm, eps, paper,
    strong, difference, strong_source, strong_attacks (strong NaN where no strong attack ran at that eps)."""
    acc = results[(results[METRIC] == ACCURACY) & (results[INPUT] == ADVERSARIAL)]
    paper = acc[is_paper(acc) & (acc[EPS] > 0)]
    if paper.empty:
        return pd.DataFrame()
    if NORM not in paper.columns:
        paper = paper.assign(**{NORM: "?"})
    protocol = paper[PROTOCOL] if PROTOCOL in paper.columns else paper[ATTACK].map(family)
    paper = paper.assign(protocol=protocol.fillna(paper[ATTACK].map(family)).astype(str))
    keys = [MODEL, NORM, EPS]
    paper = paper.groupby(["protocol", ATTACK, *keys], sort=False, as_index=False)[VALUE].mean()
    strong = worst_case(results).rename(columns={VALUE: "strong", "source": "strong_source",
                                                 "attacks": "strong_attacks"})  # fmt: skip
    out = paper.rename(columns={VALUE: "paper"}).merge(strong, on=keys, how="left")
    out["difference"] = out["paper"] - out["strong"]
    order = {m: i for i, m in enumerate(models(results))}
    protocols = {p: i for i, p in enumerate(dict.fromkeys(paper["protocol"]))}  # the run's order
    out = out.assign(_order=out[MODEL].map(order), _protocol=out["protocol"].map(protocols))
    out = out.sort_values(["_order", "_protocol", NORM, EPS])
    columns = [MODEL, "protocol", ATTACK, NORM, EPS, "paper", "strong", "difference", "strong_source",
               "strong_attacks"]  # fmt: skip
    return out[columns].reset_index(drop=True)


def paper_table(frame: pd.DataFrame) -> pd.DataFrame:
    """`paper_vs_strong` for the page, with readable headers."""
    if frame.empty:
        return pd.DataFrame()
    out = frame.drop(columns=[NORM] if frame[NORM].nunique() <= 1 else [])
    return out.rename(columns={"protocol": "paper protocol", ATTACK: "paper attack", EPS: "ε",
                               "paper": "robust acc (paper protocol)", "strong": "robust acc (strong: worst case)",
                               "difference": "overstatement (paper − strong)", "strong_source": "strong from",
                               "strong_attacks": "strong attacks"})  # fmt: skip
