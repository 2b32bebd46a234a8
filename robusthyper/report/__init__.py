"""The HTML report of a run: `build(run_dir) -> Path` writes `<run_dir>/index.html` and `figures/`.

One self-contained page (images embedded as data URIs, inline CSS, no script, no network) rendered from a
jinja2 template with autoescaping: robust accuracy, entropy and mutual information, and detection AUROC vs
eps, a reliability diagram per model, the worst case over attacks, the numbers, every setting and seed,
the environment (meta.json) and any warnings, with the run's sanity flags (flags.csv) at the top. The figures are also written as PNG and SVG beside the page.

Everything is computed and rendered in memory first; files are then written under temporary names and
renamed, `index.html` last, so a failure never leaves a half-written page. Bad input (a missing folder, no
results, an incompatible schema, an output path that cannot be written) is a `UserError`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from robusthyper.errors import UserError

log = logging.getLogger(__name__)

INDEX = "index.html"
FIGURES = "figures"

__all__ = ["build", "INDEX", "FIGURES"]


def _output_path(run_dir: Path, out: Path | str | None) -> Path:
    if out is None:
        return run_dir / INDEX
    folder_like = isinstance(out, str) and out.endswith(("/", os.sep))
    out = Path(out)
    return out / INDEX if folder_like or out.is_dir() else out


def _ensure_dir(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(
            f"cannot write the report's {what} in '{folder}' ({reason}); pass --out PATH"
        ) from None


def _write_atomic(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build(run_dir: Path | str, out: Path | str | None = None, *, title: str | None = None) -> Path:
    """Write the report of the run in `run_dir` and return the path of its `index.html`.

    `out`: the page's path (a folder means `<folder>/index.html`); default `<run_dir>/index.html`.
    The figures go to `figures/` beside the page as `<name>.png` and `<name>.svg`.
    """
    from robusthyper.report import data as d
    from robusthyper.report import html, plots

    run_dir = Path(run_dir)
    run = d.load_run(run_dir)
    page = _output_path(run_dir, out)
    models = d.models(run.results)
    colors = plots.palette(models)
    results, ood = d.split_ood(run.results)
    meta = run.meta
    recorded = meta.get("warnings")  # warnings the run itself recorded (e.g. a non-monotone accuracy curve)
    if isinstance(recorded, list):
        run.warnings[:0] = [str(w) for w in recorded]

    flags = d.sanity_flags(run)
    worst = d.worst_case(results)
    drawn = [plots.robust_accuracy(results, colors), plots.worst_case(worst, colors),
             plots.uncertainty(results, colors)]  # fmt: skip
    figures = [plot for plot in drawn if plot is not None]
    detection = None
    if run.examples is not None:
        detection = d.detection(run.examples, results)
        plot = plots.detection(detection, results, colors)
        if plot is None:
            run.warn("no adversarial examples with ε > 0: the detection AUROC plot is skipped")
        else:
            figures.append(plot)
        plot = plots.reliability(run.examples, models, colors)
        if plot is not None:
            figures.append(plot)
            if d.CLEAN_CONFIDENCE not in run.examples.columns:
                run.warn(
                    f"the per-example table has no '{d.CLEAN_CONFIDENCE}' column: the reliability panels "
                    "show accuracy per entropy bin, not per confidence bin"
                )
    plot = plots.ood(ood, colors)
    if plot is not None:
        figures.append(plot)
    if not any(p.name == "robust_accuracy" for p in figures):
        run.warn("the results hold no adversarial accuracy rows: the robust accuracy plot is skipped")

    tables = {"Worst case over attacks": worst.rename(columns={d.VALUE: "robust accuracy"})}
    if detection is not None and not detection.empty:
        wide = detection.pivot_table(index=[c for c in detection.columns if c not in
                                            ("score", "subset", d.VALUE, "n_positive")],
                                     columns=["score", "subset"], values=d.VALUE, sort=False)  # fmt: skip
        wide.columns = [f"AUROC {score} ({subset})" for score, subset in wide.columns]
        tables["Detection AUROC"] = wide.reset_index().rename(columns={"panel": "attack"})
    if not ood.empty:
        tables["Out-of-distribution detection"] = d.ood_table(ood)
    tables["Numbers"] = d.numbers(results)
    tables["Settings"] = d.settings(results)

    summary = [("models", ", ".join(models)), ("attacks", ", ".join(dict.fromkeys(results[d.ATTACK])))]
    for key in ("dataset", "n"):
        if key in results.columns:
            summary.append((key, ", ".join(str(v) for v in dict.fromkeys(results[key]))))
    if not ood.empty:
        summary.append(("OOD sets", ", ".join(dict.fromkeys(ood[d.INPUT]))))
    summary.append(("ε grid", ", ".join(f"{v:g}" for v in sorted(set(results[d.EPS].dropna())))))
    for key in ("run_id", "command", "device", "written"):
        if key in meta:
            summary.append((key, str(meta[key])))
    files = sorted(
        p.name for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p != page
    )
    text = html.render(
        title=title or f"robusthyper report: {meta.get('run_id', run_dir.name)}",
        run={"folder": str(run_dir), "summary": summary},
        plots=figures,
        tables=tables,
        meta=meta,
        seeds=d.seeds(results, meta),
        warnings=run.warnings,
        files=files,
        flags=flags,
    )

    _ensure_dir(page.parent, "page")
    figure_dir = page.parent / FIGURES
    if figures:
        _ensure_dir(figure_dir, "figures")
    try:
        for plot in figures:
            _write_atomic(figure_dir / f"{plot.name}.png", plot.png)
            _write_atomic(figure_dir / f"{plot.name}.svg", plot.svg)
        _write_atomic(page, text.encode("utf-8"))
    except OSError as err:
        raise UserError(
            f"cannot write the report to '{page}' ({err.strerror or err}); pass --out PATH"
        ) from None
    log.info("wrote %s", page)
    return page
