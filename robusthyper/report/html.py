"""Rendering the report page from `templates/report.html.j2` with jinja2 (autoescape always on).

The page is self-contained: images are base64 data URIs, the CSS is inline, there is no script, and a
Content-Security-Policy forbids loading anything else, so the file opens offline and a stray external
reference shows up as a console error rather than a silent network request.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined

from robusthyper.report.plots import Plot

TEMPLATE = "report.html.j2"


@dataclass
class Table:
    """A table of a section: an optional sub-heading and its frame (shown only when not empty)."""

    title: str
    frame: pd.DataFrame


@dataclass
class Section:
    """One section of the page, listed once in the navigation: a heading (`id` is its anchor), paragraphs
    of text, figures and tables, in that order. Everything in it is escaped by the template."""

    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    figures: list[Plot] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def _environment() -> Environment:
    # autoescape=True (not select_autoescape): the template's .j2 suffix must not turn escaping off.
    env = Environment(
        loader=PackageLoader("robusthyper.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cell"] = cell
    return env


def cell(value: Any) -> str:
    """A table cell as text: floats to 4 significant digits, missing as an empty cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(frame: pd.DataFrame) -> dict[str, Any]:
    return {"columns": [str(c) for c in frame.columns], "rows": frame.itertuples(index=False, name=None)}


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def environment_rows(meta: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """meta.json as (key, text, is_block): scalars inline, nested values as indented JSON."""
    rows = []
    for key, value in meta.items():
        if isinstance(value, dict | list):
            rows.append((str(key), json.dumps(value, indent=2, default=str, ensure_ascii=False), True))
        else:
            rows.append((str(key), "" if value is None else str(value), False))
    return rows


def render(
    *,
    title: str,
    run: dict[str, Any],
    sections: Sequence[Section],
    meta: dict[str, Any],
    seeds: Sequence[str],
    warnings: Sequence[str],
    files: Sequence[str],
    flags: pd.DataFrame | None = None,
) -> str:
    """The page. `flags`: the sanity flags' table (empty: a clean bill; None: the run recorded none).
    Sections without a figure or a non-empty table are left out (and out of the navigation)."""
    shown = []
    for section in sections:
        figures = [{"name": p.name, "title": p.title, "caption": p.caption, "src": data_uri(p.png)}
                   for p in section.figures]  # fmt: skip
        tables = [{"title": t.title, **table(t.frame)} for t in section.tables if not t.frame.empty]
        if figures or tables:
            shown.append({"id": section.id, "title": section.title, "paragraphs": list(section.paragraphs),
                          "figures": figures, "tables": tables})  # fmt: skip
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=title,
            run=run,
            sections=shown,
            environment=environment_rows(meta),
            seeds=list(seeds),
            warnings=list(warnings),
            files=list(files),
            flags=None if flags is None else {**table(flags), "rows": list(table(flags)["rows"])},
            generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
    )
