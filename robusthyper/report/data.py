"""The tidy frames every plot and table of the report is drawn from, as functions of a run's tables
(`robusthyper.run.Run`; its column names come from `robusthyper.run.schema`). Frames stay long (tidy) so
that seaborn plots them without reshaping.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from robusthyper.run import Run
from robusthyper.run.schema import (
    ACCURACY,
    ADV_CORRECT,
    ADVERSARIAL,
    ATTACK,
    CLEAN,
    CLEAN_CONFIDENCE,
    CLEAN_CORRECT,
    CLEAN_ENTROPY,
    EOT,
    EPS,
    FAMILY,
    INDEX,
    INPUT,
    K_ATTACK,
    K_EVAL,
    METRIC,
    MODEL,
    NORM,
    OOD,
    PROTOCOL,
    RESTARTS,
    SEED,
    STRONG,
    VALUE,
    WORST_CASE,
)
from robusthyper.run.schema import N as N_COLUMN
from robusthyper.run.tables import detection_aurocs, with_wilson

log = logging.getLogger(__name__)

ENTROPY = "entropy"
VARIANT_COLUMNS = (NORM, EOT, K_ATTACK)
"""Optional settings that, when they take several values, split an attack into separate curves."""
PGD, ADAPTIVE = "pgd", "pgd-adaptive"
"""Attack families of plain PGD and of the adaptive PGD (the detection-aware comparison)."""
DETECTION_FPR = 0.05
"""False-positive rate on clean inputs at which the detection-aware tables set the flag threshold."""
OOD_COLUMNS = {"ood_auroc_entropy": "AUROC entropy", "ood_auroc_mi": "AUROC MI",
               "ood_entropy": "mean OOD entropy", "ood_mi": "mean OOD MI"}  # fmt: skip
SCORE_LABELS = {"entropy": "entropy", "mi": "MI"}
"""How the page names the detection scores."""
RELIABILITY_BINS = 10


# ---------------------------------------------------------------- frames for the plots and tables


def sanity_flags(run: Run) -> pd.DataFrame | None:
    """The run's sanity flags, errors first, or None when the run recorded none (a run folder of an older
    robusthyper)."""
    if run.flags is None:
        return None
    order = (run.flags["severity"] != "error").to_numpy()
    return run.flags.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)


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
    frame = add_panel(examples[examples[ATTACK] != WORST_CASE], reference)
    table = detection_aurocs(frame, by=[*_curve_keys(frame), EPS])
    return table.assign(score=table["score"].map(SCORE_LABELS))


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


def is_paper(frame: pd.DataFrame) -> pd.Series:
    """Rows of the papers' own protocols (`protocol` other than 'strong')."""
    return frame[PROTOCOL].astype(str) != STRONG


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


def main_examples(examples: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """The per-example rows of `main_grid`."""
    rows = examples[~is_paper(examples)]
    drop = study_points(results[~is_paper(results)])
    drop = drop[[c for c in drop.columns if c in rows.columns]]
    rows = _drop_matching(rows, drop)
    same = _present(rows, (MODEL, ATTACK, NORM, EPS, K_EVAL, SEED, K_ATTACK, INDEX))
    return rows.drop_duplicates(subset=same).reset_index(drop=True)


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
    rows = with_wilson(rows)
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


def _adaptive_partner(label: str, families: dict[str, str]) -> str | None:
    """The plain PGD label to compare adaptive `label` with: same steps if recorded, else the first PGD
    (`families`: label -> family of every attack recorded)."""
    same = label.replace(ADAPTIVE, PGD, 1)
    if same in families:
        return same
    return next((other for other, family in families.items() if family == PGD), None)


def detection_aware(examples: pd.DataFrame, fpr: float = DETECTION_FPR) -> pd.DataFrame:
    """Detection-aware robust accuracy (`robusthyper.attacks.adaptive.detection_table`) of the adaptive PGD
    and of plain PGD at the same (model, norm, eps, K_eval, seed, K_attack where possible), by MI and by
    entropy. Long: model, norm, eps, score, kind
    ('pgd' / 'adaptive'), attack, k_attack, robust_acc, detection_aware_acc, flagged, threshold, n."""
    from robusthyper.attacks.adaptive import detection_table

    if examples.empty:
        return pd.DataFrame()
    examples = examples[examples[ATTACK] != WORST_CASE]
    same = _present(examples, (MODEL, ATTACK, NORM, EPS, K_EVAL, SEED, K_ATTACK, INDEX))
    examples = examples.drop_duplicates(subset=same)
    adaptive = examples[examples[FAMILY] == ADAPTIVE]
    if adaptive.empty:
        return pd.DataFrame()
    families = dict(zip(examples[ATTACK], examples[FAMILY], strict=True))
    keys = _present(examples, (MODEL, NORM, EPS, K_EVAL, SEED))
    out = []
    for (label, k), group in adaptive.groupby([ATTACK, K_ATTACK], sort=False, dropna=False):
        partner = _adaptive_partner(str(label), families)
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

    def col(value: str, kind: str) -> np.ndarray:
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
    paper = paper.assign(protocol=paper[PROTOCOL].astype(str))
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
