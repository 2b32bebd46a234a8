"""The report's figures: seaborn line plots drawn on Agg canvases, returned as PNG and SVG bytes.

Figures are built with `matplotlib.figure.Figure` and an explicit `FigureCanvasAgg`, never through pyplot:
the report neither switches the caller's backend (a notebook keeps its own) nor leaves figures open in
pyplot's global registry. Every model keeps one colour across all figures. Every figure labels its axes,
titles its panels and has a legend; error bars, where drawn (EOT convergence), are Wilson 95% intervals
over the evaluated examples.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from robusthyper.report import data as d
from robusthyper.run import schema as s

PANEL_W, PANEL_H = 4.3, 3.2
MAX_COLS = 3
DPI = 110


@dataclass
class Plot:
    """One figure: `name` (file stem), title and caption for the page, PNG and SVG bytes."""

    name: str
    title: str
    caption: str
    png: bytes
    svg: bytes


def palette(models: Sequence[str]) -> dict[str, Any]:
    return dict(zip(models, sns.color_palette("colorblind", max(len(models), 1)), strict=False))


def _figure(n_panels: int, n_rows_per: int = 1) -> tuple[Figure, np.ndarray]:
    cols = min(n_panels, MAX_COLS)
    rows = math.ceil(n_panels / cols) * n_rows_per
    fig = Figure(figsize=(PANEL_W * cols + 1.8, PANEL_H * rows + 0.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def _finish(
    fig: Figure,
    axes: np.ndarray,
    used: int,
    name: str,
    title: str,
    caption: str,
    legend_title: str | None = None,
) -> Plot:
    flat = axes.ravel()
    for ax in flat[used:]:
        ax.set_visible(False)
    handles, labels = {}, {}
    for ax in flat[:used]:
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=False):
            if label not in labels:
                handles[label], labels[label] = handle, label
    if handles:
        fig.legend(list(handles.values()), list(labels.values()), loc="outside right upper", frameon=False,
                   title=legend_title)  # fmt: skip
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png")
    fig.savefig(svg, format="svg", metadata={"Date": None})
    return Plot(name, title, caption, png.getvalue(), svg.getvalue())


def _eps_axis(ax: Any, ylabel: str, unit: bool = True) -> None:
    ax.set_xlabel("ε (perturbation budget)")
    ax.set_ylabel(ylabel)
    if unit:
        ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))


def _ordered(frame: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    present = set(frame["panel"])
    return [p for p in d.panel_order(results) if p in present] + sorted(present - set(d.panel_order(results)))


def _lines(ax: Any, frame: pd.DataFrame, colors: dict[str, Any], **kwargs: Any) -> None:
    sns.lineplot(data=frame, x=s.EPS, y=s.VALUE, hue=s.MODEL, hue_order=[m for m in colors if m in
                 set(frame[s.MODEL])], palette=colors, marker="o", ax=ax, errorbar=None, **kwargs)  # fmt: skip


def robust_accuracy(results: pd.DataFrame, colors: dict[str, Any]) -> Plot | None:
    """Robust accuracy vs eps, one panel per attack. `build` passes `data.main_grid`: the papers' protocols
    are left out rather than drawn dashed, because a panel of their own beside PGD's would still read as
    one more robustness curve (and a high one); `paper_vs_strong` draws them against the strong protocol,
    where the gap is the point. The single-eps K_attack points of an EOT study are left out too
    (`eot_convergence` draws them against K)."""
    frame = d.per_eps(results, s.ACCURACY)
    if frame.empty:
        return None
    panels = _ordered(frame, results)
    fig, axes = _figure(len(panels))
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        _lines(ax, frame[frame["panel"] == panel], colors)
        ax.set_title(panel)
        _eps_axis(ax, "robust accuracy")
    return _finish(fig, axes, len(panels), "robust_accuracy", "Robust accuracy vs ε",
                   "Accuracy on adversarial inputs over all evaluated examples, one panel per attack; "
                   "the point at ε = 0 is clean accuracy.")  # fmt: skip


def uncertainty(results: pd.DataFrame, colors: dict[str, Any]) -> Plot | None:
    frames = {m: d.per_eps(results, m) for m in (s.ENTROPY, s.MI)}
    frames = {m: f for m, f in frames.items() if not f.empty}
    if not frames:
        return None
    panels = _ordered(pd.concat(frames.values()), results)
    cols = min(len(panels), MAX_COLS)
    blocks = math.ceil(len(panels) / cols)
    fig, axes = _figure(len(panels), n_rows_per=len(frames))
    labels = {s.ENTROPY: "predictive entropy (nats)", s.MI: "mutual information (nats)"}
    used = []
    for r, (metric, frame) in enumerate(frames.items()):
        for i, panel in enumerate(panels):
            ax = axes[r * blocks + i // cols, i % cols]
            _lines(ax, frame[frame["panel"] == panel], colors)
            ax.set_title(f"{panel}: {'entropy' if metric == s.ENTROPY else 'MI'}")
            _eps_axis(ax, labels[metric], unit=False)
            ax.set_ylim(bottom=0)
            used.append(ax)
    for ax in axes.ravel():
        if ax not in used:
            ax.set_visible(False)
    return _finish(fig, axes, axes.size, "uncertainty", "Predictive entropy and mutual information vs ε",
                   "Mean over examples; the point at ε = 0 is the clean input, the others adversarial. "
                   "MI is the epistemic part (zero for a deterministic net).")  # fmt: skip


def detection(frame: pd.DataFrame, results: pd.DataFrame, colors: dict[str, Any]) -> Plot | None:
    frame = frame[frame[s.EPS] > 0].dropna(subset=[s.VALUE])
    if frame.empty:
        return None
    panels = _ordered(frame, results)
    fig, axes = _figure(len(panels))
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        part = frame[(frame["panel"] == panel) & (frame["subset"] == "all")]
        _lines(ax, part, colors, style="score", style_order=["entropy", "MI"])
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(panel)
        _eps_axis(ax, "detection AUROC")
    return _finish(fig, axes, len(panels), "detection_auroc", "Adversarial detection AUROC vs ε",
                   "Clean (negative) vs adversarial (positive) inputs, scored by predictive entropy (solid) "
                   "and by mutual information (dashed); 0.5 (dotted) is chance.")  # fmt: skip


def worst_case(frame: pd.DataFrame, colors: dict[str, Any]) -> Plot | None:
    if frame.empty:
        return None
    norms = list(dict.fromkeys(frame[s.NORM]))
    fig, axes = _figure(len(norms))
    for ax, norm in zip(axes.ravel(), norms, strict=False):
        _lines(ax, frame[frame[s.NORM] == norm], colors)
        ax.set_title(f"worst case over attacks ({norm})")
        _eps_axis(ax, "robust accuracy")
    return _finish(fig, axes, len(norms), "worst_case", "Worst case over attacks",
                   "Per (model, ε): the per-example worst case over attacks where the run recorded it, "
                   "else the lowest robust accuracy of any attack.")  # fmt: skip


def reliability(examples: pd.DataFrame, models: Sequence[str], colors: dict[str, Any]) -> Plot | None:
    panels = [(m, d.reliability(examples, m)) for m in models if (examples[s.MODEL] == m).any()]
    panels = [(m, r) for m, r in panels if r["n"] > 0]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    kind = panels[0][1]["kind"]
    for ax, (model, rel) in zip(axes.ravel(), panels, strict=False):
        color = colors.get(model)
        if rel["kind"] == "confidence":
            ax.bar(rel["lower"], rel["accuracy"], width=rel["width"], align="edge", color=color, alpha=0.8,
                   edgecolor="black", lw=0.5)  # fmt: skip
            ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
            ax.set_xlim(0, 1)
            ax.set_xlabel("confidence (max mean probability)")
            ax.set_title(f"{model}  (ECE {rel['ece']:.3f}, n={rel['n']})")
        else:
            ax.plot(rel["score"], rel["accuracy"], marker="o", color=color)
            ax.set_xlabel("predictive entropy (nats), equal-count bins")
            ax.set_title(f"{model}  (n={rel['n']})")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.03)
        ax.grid(True, alpha=0.3)
    if kind == "confidence":
        caption = ("Clean inputs; bars are the accuracy per confidence bin, the dashed diagonal is perfect "
                   "calibration.")  # fmt: skip
    else:
        caption = ("Clean inputs. The per-example table has no clean_confidence column, so this shows "
                   "accuracy per bin of predictive entropy (a calibrated model's accuracy falls as entropy "
                   "rises) instead of accuracy per confidence bin.")  # fmt: skip
    return _finish(fig, axes, len(panels), "reliability", "Reliability per model", caption)


def ood(frame: pd.DataFrame, colors: dict[str, Any]) -> Plot | None:
    """Bars of OOD detection AUROC per model, by entropy and by MI, one panel per OOD set."""
    frame = frame[frame[s.METRIC].isin(["ood_auroc_entropy", "ood_auroc_mi"])].dropna(subset=[s.VALUE])
    if frame.empty:
        return None
    frame = frame.assign(score=frame[s.METRIC].map({"ood_auroc_entropy": "entropy", "ood_auroc_mi": "MI"}))
    sets = list(dict.fromkeys(frame[s.INPUT]))
    fig, axes = _figure(len(sets))
    for ax, name in zip(axes.ravel(), sets, strict=False):
        part = frame[frame[s.INPUT] == name]
        sns.barplot(data=part, x="score", y=s.VALUE, hue=s.MODEL, order=["entropy", "MI"],
                    hue_order=[m for m in colors if m in set(part[s.MODEL])], palette=colors, ax=ax,
                    errorbar=None)  # fmt: skip
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(f"in-distribution vs {name}")
        ax.set_xlabel("score")
        ax.set_ylabel("OOD detection AUROC")
        ax.set_ylim(0, 1.03)
        ax.grid(True, axis="y", alpha=0.3)
    return _finish(fig, axes, len(sets), "ood_auroc", "Out-of-distribution detection AUROC",
                   "Clean test inputs (negative) vs out-of-distribution inputs (positive), scored by predictive "
                   "entropy and by mutual information; 0.5 (dotted) is chance.")  # fmt: skip


def _k_axis(ax: Any, ks: Sequence[float]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(ks))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("K_attack: posterior samples per attack step (log scale)")
    ax.set_ylabel("robust accuracy")
    ax.grid(True, alpha=0.3)


def eot_convergence(study: pd.DataFrame, colors: dict[str, Any]) -> Plot | None:
    """Robust accuracy vs K_attack (log x) per model, with Wilson 95% error bars, one panel per (attack,
    eps). A model with a single K there (a deterministic net) is a dashed horizontal reference line."""
    if study.empty:
        return None
    panels = list(dict.fromkeys(study["panel"]))
    fig, axes = _figure(len(panels))
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        part = study[study["panel"] == panel]
        ks = part[s.K_ATTACK].astype(float)
        for model in [m for m in colors if m in set(part[s.MODEL])]:
            rows = part[part[s.MODEL] == model].sort_values(s.K_ATTACK)
            color = colors[model]
            if len(rows) < 2:
                value = float(rows[s.VALUE].iloc[0])
                k = rows[s.K_ATTACK].iloc[0]
                ax.axhline(value, color=color, ls="--", lw=1.2, label=f"{model} (one K_attack: {d._fmt(k)})")
                continue
            x, y = rows[s.K_ATTACK].astype(float).to_numpy(), rows[s.VALUE].to_numpy(dtype=float)
            lo, hi = rows["lo"].to_numpy(dtype=float), rows["hi"].to_numpy(dtype=float)
            yerr = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
            has_err = np.isfinite(yerr).all()
            ax.errorbar(x, y, yerr=yerr if has_err else None, color=color, marker="o", capsize=3, lw=1.6,
                        label=model)  # fmt: skip
        _k_axis(ax, ks.tolist())
        low = np.nanmin(np.r_[part[s.VALUE].to_numpy(dtype=float), part["lo"].to_numpy(dtype=float)])
        high = np.nanmax(np.r_[part[s.VALUE].to_numpy(dtype=float), part["hi"].to_numpy(dtype=float)])
        ax.set_ylim(max(-0.02, low - 0.05), min(1.02, high + 0.05))
        ax.set_title(panel)
    return _finish(fig, axes, len(panels), "eot_convergence", "Robust accuracy vs K_attack",
                   "Robust accuracy over all evaluated examples as the number of posterior samples averaged "
                   "per attack step (EOT) grows; error bars are Wilson 95% intervals over the n examples. "
                   "A dashed line is a model attacked with one K_attack only (a deterministic net, whose "
                   "samples are all the same).", legend_title="model")  # fmt: skip


KIND_LABELS = {"pgd": "PGD (non-adaptive)", "adaptive": "adaptive PGD (lowers the score)",
               "worst": "worst of both, per example"}  # fmt: skip


def detection_aware(frame: pd.DataFrame, colors: dict[str, Any]) -> Plot | None:
    """Detection-aware robust accuracy vs eps, one panel per detection score: per model, plain PGD solid
    and the adaptive attack dashed."""
    if frame.empty:
        return None
    frame = frame.assign(attack=frame["kind"].map(KIND_LABELS))
    scores = [s for s in ("MI", "entropy") if s in set(frame["score"])]
    fig, axes = _figure(len(scores))
    for ax, score in zip(axes.ravel(), scores, strict=False):
        part = frame[frame["score"] == score].rename(columns={"detection_aware_acc": s.VALUE})
        _lines(ax, part, colors, style="attack",
               style_order=[k for k in KIND_LABELS.values() if k in set(part["attack"])])  # fmt: skip
        ax.set_title(f"{score} detector, 5% false positives")
        _eps_axis(ax, "detection-aware robust accuracy")
    return _finish(fig, axes, len(scores), "detection_aware", "Detection-aware robust accuracy vs ε",
                   "An example counts as defended when its adversarial version is classified correctly or "
                   "flagged (its score above the threshold that flags 5% of clean inputs), against plain PGD "
                   "(ignores the detector), adaptive PGD (also lowers the score) and, per example, the "
                   "worst of the two.")  # fmt: skip


def paper_vs_strong(frame: pd.DataFrame, worst: pd.DataFrame, colors: dict[str, Any]) -> Plot | None:
    """Robust accuracy vs eps under each paper protocol (dashed, `data.paper_vs_strong`) and under the
    strong protocol (solid: `data.worst_case`, the per-example worst case over the strong attacks, over the
    run's whole eps grid), one panel per paper protocol, per model."""
    if frame.empty:
        return None
    strong_label, paper_label = "strong protocol (worst case)", "paper protocol"
    protocols = list(dict.fromkeys(frame["protocol"]))
    strong = worst[worst[s.MODEL].isin(set(frame[s.MODEL])) & worst[s.NORM].isin(set(frame[s.NORM]))]
    fig, axes = _figure(len(protocols))
    for ax, protocol in zip(axes.ravel(), protocols, strict=False):
        part = frame[frame["protocol"] == protocol]
        long = pd.concat([part.assign(evaluation=paper_label, **{s.VALUE: part["paper"]}),
                          strong.assign(evaluation=strong_label)], ignore_index=True)  # fmt: skip
        long = long.dropna(subset=[s.VALUE])
        _lines(ax, long, colors, style="evaluation",
               style_order=[s for s in (strong_label, paper_label) if s in set(long["evaluation"])])  # fmt: skip
        attacks = ", ".join(dict.fromkeys(part[s.ATTACK]))
        ax.set_title(f"{attacks} vs the strong protocol")
        _eps_axis(ax, "robust accuracy")
    return _finish(fig, axes, len(protocols), "paper_vs_strong", "Papers' protocols vs the strong protocol",
                   "Dashed: robust accuracy under the paper's own protocol (unclipped, single-sample "
                   "gradients); solid: under the strong protocol (per example, the worst case over every "
                   "strong attack at that ε; at ε = 0 clean accuracy). The gap is how much the paper's "
                   "protocol overstates robustness.")  # fmt: skip
