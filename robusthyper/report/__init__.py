"""The HTML report of a run: `build(run_dir) -> Path` writes `<run_dir>/index.html` and `figures/`.

One self-contained page (images embedded as data URIs, inline CSS, no script, no network) rendered from a
jinja2 template with autoescaping: robust accuracy, entropy and mutual information, and detection AUROC vs
eps, a reliability diagram per model, the worst case over attacks, the numbers, every setting and seed,
the environment (meta.json) and any warnings, with the run's sanity flags (flags.csv) at the top. Where the
run holds them, three sections of honest evaluation follow the worst case: EOT convergence (robust accuracy
vs K_attack), detection-aware robustness (plain vs adaptive PGD against an MI or entropy detector at 5% false
positives) and the papers' protocols beside the strong protocol. The figures are also written as PNG and SVG
beside the page.

Everything is computed and rendered in memory first; files are then written under temporary names and
renamed, `index.html` last, so a failure never leaves a half-written page. Bad input (a missing folder, no
results, an incompatible schema, an output path that cannot be written) is a `UserError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robusthyper.errors import UserError
from robusthyper.files import ensure_writable, write_atomic
from robusthyper.run import schema as s

if TYPE_CHECKING:  # the CLI imports this package; pandas and matplotlib load only when a page is built
    import pandas as pd

    from robusthyper.report.html import Section, Table
    from robusthyper.report.plots import Plot
    from robusthyper.run import Run

log = logging.getLogger(__name__)

INDEX = "index.html"
FIGURES = "figures"

__all__ = ["FIGURES", "INDEX", "Page", "build", "render"]


def _output_path(run_dir: Path, out: Path | str | None) -> Path:
    if out is None:
        return run_dir / INDEX
    folder_like = isinstance(out, str) and out.endswith(("/", os.sep))
    out = Path(out)
    return out / INDEX if folder_like or out.is_dir() else out


def _drop_flag_duplicates(warnings: list[str], flags: pd.DataFrame | None) -> list[str]:
    """The run's recorded warnings without those that repeat a sanity flag shown in the flags table (a
    sweep records every flag in meta.json's `warnings` too; the page shows each once, in the table)."""
    if flags is None or flags.empty:
        return warnings
    messages = [str(m) for m in flags["message"].dropna() if str(m)]
    return [w for w in warnings if not any(m in w for m in messages)]


@dataclass
class Page:
    """A report in memory: the HTML (figures embedded) and the figures to write beside it."""

    html: str
    figures: list[Plot]


def render(run: Run, *, title: str | None = None, files: Sequence[str] = ()) -> Page:
    """The report of a run, in memory: a pure function of its tables (`robusthyper.run.Run`). `files`: the
    run folder's files, listed on the page.

    The per-eps figures (robust accuracy, entropy and MI, detection AUROC) draw `data.main_grid`: the
    papers' protocols and the single-eps points of an EOT study have their own sections instead, so that a
    weak protocol is never read as a robustness curve and the figures keep one panel per attack.
    """
    from robusthyper.report import data as d
    from robusthyper.report import html, plots

    warnings = list(run.notes)

    def warn(message: str) -> None:
        log.warning("%s", message)
        warnings.append(message)

    if not run.meta:
        warn("no meta.json in the run folder: the environment is unknown")
    if run.examples is None and not run.notes:
        warn("no per-example table (examples.parquet): detection AUROC and reliability diagrams are skipped")
    models = d.models(run.results)
    colors = plots.palette(models)
    results, ood = d.split_ood(run.results)
    main = d.main_grid(results)
    meta = run.meta
    flags = d.sanity_flags(run)
    recorded = meta.get("warnings")  # warnings the run itself recorded (e.g. a non-monotone accuracy curve)
    if isinstance(recorded, list):
        warnings[:0] = _drop_flag_duplicates([str(w) for w in recorded], flags)

    examples = run.examples
    main_examples = None if examples is None else d.main_examples(examples, results)

    sections: list[Section] = []

    def add(
        section_id: str,
        heading: str,
        plot: Plot | None = None,
        tables: Sequence[Table] = (),
        paragraphs: Sequence[str] = (),
    ) -> None:
        figures = [plot] if plot is not None else []
        sections.append(html.Section(section_id, heading, list(paragraphs), figures, list(tables)))

    plot = plots.robust_accuracy(main, colors)
    if plot is None:
        warn("the results hold no adversarial accuracy rows: the robust accuracy plot is skipped")
    else:
        add("robust_accuracy", plot.title, plot)
    worst = d.worst_case(results)
    plot = plots.worst_case(worst, colors)
    if plot is not None or not worst.empty:
        add("worst_case", "Worst case over attacks", plot,
            [html.Table("", worst.rename(columns={s.VALUE: "robust accuracy"}))])  # fmt: skip

    study = d.eot_study(results)
    if not study.empty:
        plot = plots.eot_convergence(study, colors)
        add(
            "eot_convergence", "EOT convergence", plot, [html.Table("", d.eot_table(study))], _eot_text(study)
        )
    if examples is not None:
        aware = d.detection_aware(examples)
        if not aware.empty:
            plot = plots.detection_aware(aware, colors)
            table = html.Table("", d.detection_aware_table(aware))
            add("detection_aware", "Detection-aware robustness", plot, [table], _detection_text(meta))
    paper = d.paper_vs_strong(results)
    if not paper.empty:
        plot = plots.paper_vs_strong(paper, worst, colors)
        table = html.Table("", d.paper_table(paper))
        add("paper_vs_strong", "Papers' protocols vs the strong protocol", plot, [table], _paper_text(paper))

    plot = plots.uncertainty(main, colors)
    if plot is not None:
        add(plot.name, plot.title, plot)
    if main_examples is not None:
        detection = d.detection(main_examples, main)
        plot = plots.detection(detection, main, colors)
        if plot is None:
            warn("no adversarial examples with ε > 0: the detection AUROC plot is skipped")
        tables: list[Table] = []
        if not detection.empty:
            wide = detection.pivot_table(index=[c for c in detection.columns if c not in
                                                ("score", "subset", s.VALUE, "n_positive")],
                                         columns=["score", "subset"], values=s.VALUE, sort=False)  # fmt: skip
            wide.columns = [f"AUROC {score} ({subset})" for score, subset in wide.columns]
            tables.append(html.Table("", wide.reset_index().rename(columns={"panel": "attack"})))
        if plot is not None or tables:
            add("detection_auroc", "Adversarial detection AUROC", plot, tables)
        plot = plots.reliability(main_examples, models, colors)
        if plot is not None:
            add(plot.name, plot.title, plot)
            if s.CLEAN_CONFIDENCE not in main_examples.columns:
                warn(
                    f"the per-example table has no '{s.CLEAN_CONFIDENCE}' column: the reliability panels "
                    "show accuracy per entropy bin, not per confidence bin"
                )
    plot = plots.ood(ood, colors)
    if plot is not None or not ood.empty:
        name = plot.title if plot is not None else "Out-of-distribution detection"
        add("ood_auroc", name, plot, [html.Table("", d.ood_table(ood))])
    add("numbers", "Numbers", None, [html.Table("", d.numbers(results))])
    add("settings", "Settings", None, [html.Table("", d.settings(results))])
    figures = [f for section in sections for f in section.figures]

    summary = [("models", ", ".join(models)), ("attacks", ", ".join(dict.fromkeys(results[s.ATTACK])))]
    for key in ("dataset", "n"):
        if key in results.columns:
            summary.append((key, ", ".join(str(v) for v in dict.fromkeys(results[key]))))
    if not ood.empty:
        summary.append(("OOD sets", ", ".join(dict.fromkeys(ood[s.INPUT]))))
    summary.append(("ε grid", ", ".join(f"{v:g}" for v in sorted(set(results[s.EPS].dropna())))))
    for key in ("run_id", "command", "device", "written"):
        if key in meta:
            summary.append((key, str(meta[key])))
    text = html.render(
        title=title or f"robusthyper report: {run.name}",
        run={"folder": str(run.folder or ""), "summary": summary},
        sections=sections,
        meta=_environment(meta),
        seeds=d.seeds(results, meta),
        warnings=warnings,
        files=list(files),
        flags=flags,
    )
    return Page(text, figures)


def build(run_dir: Path | str, out: Path | str | None = None, *, title: str | None = None) -> Path:
    """Write the report of the run in `run_dir` (`render`) and return the path of its `index.html`.

    `out`: the page's path (a folder means `<folder>/index.html`); default `<run_dir>/index.html`.
    The figures go to `figures/` beside the page as `<name>.png` and `<name>.svg`.
    """
    from robusthyper.run import read_run

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"'{run_dir}' is not a folder; pass a run folder such as reports/<run-id>")
    run = read_run(run_dir)
    page = _output_path(run_dir, out)
    files = sorted(p.name for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p != page)
    rendered = render(run, title=title, files=files)
    figures, text = rendered.figures, rendered.html
    ensure_writable(page.parent, "cannot write the report's page there; pass --out PATH")
    figure_dir = page.parent / FIGURES
    if figures:
        ensure_writable(figure_dir, "cannot write the report's figures there; pass --out PATH")
    try:
        for plot in figures:
            write_atomic(figure_dir / f"{plot.name}.png", plot.png)
            write_atomic(figure_dir / f"{plot.name}.svg", plot.svg)
        write_atomic(page, text.encode("utf-8"))
    except OSError as err:
        raise UserError(
            f"cannot write the report to '{page}' ({err.strerror or err}); pass --out PATH"
        ) from None
    log.info("wrote %s", page)
    return page


def _environment(meta: dict[str, Any]) -> dict[str, Any]:
    """meta.json for the environment table, its `warnings` replaced by a pointer: they are shown once, in
    the sanity flags and the warnings above."""
    if "warnings" not in meta:
        return meta
    count = len(meta["warnings"]) if isinstance(meta["warnings"], list) else "some"
    return {**meta, "warnings": f"{count} recorded: see Sanity flags and Warnings at the top"}


def _eot_text(study: pd.DataFrame) -> list[str]:
    eot = ", ".join(str(v) for v in dict.fromkeys(study[s.EOT].dropna())) if s.EOT in study else ""
    mode = f" (EOT mode: {eot})" if eot else ""
    return [
        f"Robust accuracy of the same attack at the same ε as K_attack, the number of posterior samples "
        f"averaged per attack step{mode}, grows. If it still falls as K_attack grows, the attack's gradient "
        "estimate was too noisy at the smaller K and the numbers computed at that K overstate robustness: "
        "raise K_attack until doubling it no longer lowers robust accuracy (METHODS.md §4; the "
        "eot-not-converged flag checks the two largest K). A curve that is flat within its error bars means "
        "EOT has converged.",
        "The table gives robust accuracy per K_attack, the change from the smallest to the largest K, and "
        "the change at the last step (the convergence check).",
    ]


def _detection_text(meta: dict[str, Any]) -> list[str]:
    specs = [s for s in meta.get("specs", []) if isinstance(s, dict) and s.get("attack") == "pgd-adaptive"]
    settings = sorted({(s.get("detection_weight"), s.get("detection_score")) for s in specs}, key=str)
    how = "; ".join(f"λ = {w:g}, score {sc.upper() if sc == 'mi' else sc}" for w, sc in settings
                    if isinstance(w, int | float) and isinstance(sc, str))  # fmt: skip
    how = f" ({how})" if how else ""
    return [
        "A defender who flags inputs whose mutual information (MI) or predictive entropy exceeds a threshold, "
        "set so that 5% of clean inputs are flagged, defends an example when its adversarial version is "
        "classified correctly or flagged. The table gives robust accuracy, this detection-aware robust "
        "accuracy and the share of adversarial inputs flagged, for each detection score.",
        "Plain PGD ignores the detector; the adaptive PGD (pgd-adaptive: maximise CE − λ · score"
        f"{how}) also lowers the score, as an attacker who knows about the detector would. The difference "
        "adaptive − PGD shows what the detection is worth against that attacker: a large negative "
        "difference means it only stops attacks that ignore it. The adaptive attack runs plain PGD until an "
        "input is misclassified and only then lowers its score, keeping the misclassified iterate with the "
        "lowest score. The figure to quote is 'worst of both': an example counts as defended only when it "
        "is defended against both attacks, since an attacker uses whichever works on that input. Plain PGD "
        "is taken at the adaptive attack's K_attack (or the nearest one recorded) and number of steps where "
        "the run has them.",
    ]


def _paper_text(paper: pd.DataFrame) -> list[str]:
    missing = sorted({float(e) for e in paper[paper["strong"].isna()][s.EPS]})
    text = [
        "Robust accuracy under each paper's own protocol beside the strong protocol's at the same model and "
        "ε. The strong number is the per-example worst case over every strong attack the run recorded at "
        "that ε (an example counts as robust only if it survives all of them; where the run recorded no "
        "per-example worst case, the lowest accuracy of any strong attack): it is the robust accuracy this "
        "report stands behind, so the difference paper − strong is how much the weak protocol overstates "
        "robustness. The papers' protocols run unclipped (inputs may leave [0, 1]) from single-sample "
        "gradients (BHN) or the mean of 100 single-sample gradient signs (BbH); they never enter the worst "
        "case and are kept out of the robust-accuracy figure.",
        "A negative difference means the paper's protocol broke more examples than the strong one, usually "
        "because its unclipped inputs leave [0, 1]: extra power outside the threat model, not a stronger "
        "attack within it.",
    ]
    if missing:
        text.append(
            "No strong attack ran at ε = " + ", ".join(f"{e:g}" for e in missing) + ": those rows have no "
            "strong value."
        )
    return text
