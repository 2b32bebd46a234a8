"""Tables derived from a run's own tables, computed in one place for the gate, the report and the sweep:
Wilson intervals of accuracies and detection AUROCs from the per-example table."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from robusthyper.run import schema as s

Z95 = 1.959963984540054
"""The 97.5% quantile of the standard normal: a two-sided 95% interval."""


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson (1927) score interval for a binomial proportion successes / n (95% by default).

    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps its coverage near 0 and 1, where robust
    accuracies often lie.
    """
    if n <= 0:
        raise ValueError(f"n = {n}: an interval needs at least one example")
    if not 0 <= successes <= n:
        raise ValueError(f"successes = {successes} is outside [0, n = {n}]")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def with_wilson(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (accuracies in `value`, example counts in `n`) with the Wilson 95% bounds `lo` and `hi`
    (NaN where n is unknown)."""
    counts = pd.to_numeric(frame[s.N], errors="coerce") if s.N in frame.columns else pd.Series(np.nan, frame.index)
    bounds = [wilson(round(min(max(v, 0.0), 1.0) * m), int(m)) if pd.notna(m) and m > 0 and pd.notna(v)
              else (math.nan, math.nan) for v, m in zip(frame[s.VALUE], counts, strict=True)]  # fmt: skip
    return frame.assign(lo=[b[0] for b in bounds], hi=[b[1] for b in bounds])


SUBSETS = ("all", "successful")
"""Adversarial inputs scored: all of them, or only the successful ones (clean correct, adversarial wrong)."""


def detection_aurocs(examples: pd.DataFrame, by: Sequence[str] = s.EXAMPLE_KEYS) -> pd.DataFrame:
    """AUROC of telling adversarial inputs (positives) from their clean versions (negatives) by predictive
    entropy and by mutual information, per group of `by` columns of the per-example table, on all adversarial
    inputs and on the successful ones only. Long: [*by, score ('entropy' | 'mi'), subset, value, n_positive];
    NaN where a group has no positives or a score is not finite."""
    from sklearn.metrics import roc_auc_score

    keys = [c for c in by if c in examples.columns]
    rows = []
    for key, group in examples.groupby(keys, sort=False, dropna=False):
        info = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        success = (group[s.CLEAN_CORRECT].astype(bool) & ~group[s.ADV_CORRECT].astype(bool)).to_numpy()
        for score, (neg, pos) in s.SCORES.items():
            negatives = group[neg].to_numpy(dtype=float)
            for subset, mask in zip(SUBSETS, (np.ones(len(group), bool), success), strict=True):
                positives = group[pos].to_numpy(dtype=float)[mask]
                scores = np.r_[negatives, positives]
                value = math.nan
                if len(positives) and len(negatives) and np.isfinite(scores).all():
                    truth = np.r_[np.zeros(len(negatives)), np.ones(len(positives))]
                    value = float(roc_auc_score(truth, scores))
                rows.append({**info, "score": score, "subset": subset, s.VALUE: value, "n_positive": len(positives)})
    return pd.DataFrame(rows, columns=[*keys, "score", "subset", s.VALUE, "n_positive"])


def detection_rows(run_results: pd.DataFrame, examples: pd.DataFrame) -> pd.DataFrame:
    """`detection_auroc_entropy` / `_mi` result rows (all adversarial inputs, per attack cell) for a gate to
    check, with the cell's settings and n."""
    table = detection_aurocs(examples)
    table = table[table["subset"] == "all"]
    datasets = list(run_results[s.DATASET].dropna().unique()) if s.DATASET in run_results else []
    counts = examples.groupby([c for c in s.EXAMPLE_KEYS if c in examples.columns], sort=False,
                              dropna=False).size().rename(s.N).reset_index()  # fmt: skip
    table = table.merge(counts, on=[c for c in s.EXAMPLE_KEYS if c in table.columns], how="left")
    table = table.assign(**{s.INPUT: s.ADVERSARIAL, s.METRIC: table["score"].map(s.DETECTION_AUROC)})
    if len(datasets) == 1:
        table = table.assign(**{s.DATASET: datasets[0]})
    family = dict(zip(examples[s.ATTACK], examples[s.FAMILY], strict=False)) if s.FAMILY in examples else {}
    table = table.assign(**{s.FAMILY: table[s.ATTACK].map(family).fillna(table[s.ATTACK])})
    return table.drop(columns=["score", "subset", "n_positive"]).reset_index(drop=True)
