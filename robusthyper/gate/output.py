"""What the gate shows and writes: a rich table of every rule, a JUnit XML report (one test case per rule,
failures as <failure>) for CI systems, and a JSON document for machines. Files are written atomically."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from robusthyper import files
from robusthyper.errors import UserError
from robusthyper.gate.check import RuleResult
from robusthyper.gate.policy import FlagRule

SUITE = "robusthyper gate"


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_table(checked: Sequence[RuleResult], title: str = "", width: int = 200) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title or None)
    for column in ("rule", "value", "95% CI", "compared", "threshold", "n", "result"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for r in checked:
        interval = f"[{r.low:.4f}, {r.high:.4f}]" if r.low is not None and r.high is not None else "-"
        op = ">=" if r.rule.kind == "min" else "<="
        verdict = "[green]pass[/green]" if r.passed else "[bold red]FAIL[/bold red]"
        n = "-" if r.n is None else str(r.n)
        compared = f"{r.rule.bound} {_cell(r.statistic)}"
        value = _cell(r.value)
        if isinstance(r.rule, FlagRule):  # a count of sanity flags, which must be 0
            value, compared = f"{int(r.value)} flag{'s' if r.value != 1 else ''}", "count"
        table.add_row(escape(r.name), value, interval, compared, f"{op} {r.threshold:g}", n, verdict)
    Console(width=width).print(table)


def summary(checked: Sequence[RuleResult]) -> dict[str, int]:
    failed = sum(not r.passed for r in checked)
    return {"rules": len(checked), "passed": len(checked) - failed, "failed": failed}


def to_json(checked: Sequence[RuleResult], extra: dict[str, Any] | None = None) -> str:
    document = {**summary(checked), "ok": all(r.passed for r in checked), **(extra or {}),
                "results": [r.to_dict() for r in checked]}  # fmt: skip
    return json.dumps(document, indent=2, default=str)


def junit_xml(checked: Sequence[RuleResult], policy_source: str = "", seconds: float = 0.0) -> bytes:
    """A JUnit XML document: <testsuites> holding one <testsuite> with one <testcase> per rule."""
    counts = summary(checked)
    attrs = {"name": SUITE, "tests": str(counts["rules"]), "failures": str(counts["failed"]), "errors": "0",
             "time": f"{seconds:.3f}"}  # fmt: skip
    root = ET.Element("testsuites", attrs)
    suite = ET.SubElement(root, "testsuite", {**attrs, "skipped": "0",
                          "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip
    if policy_source:
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", {"name": "policy", "value": policy_source})
    for r in checked:
        case = ET.SubElement(suite, "testcase", {"classname": f"robusthyper.gate.{r.rule.model}",
                                                 "name": r.name, "time": "0"})  # fmt: skip
        if not r.passed:
            kind = "sanity-flags" if isinstance(r.rule, FlagRule) else "threshold"
            failure = ET.SubElement(case, "failure", {"message": r.message(), "type": kind})
            failure.text = json.dumps(r.to_dict(), indent=2, default=str)
        ET.SubElement(case, "system-out").text = r.message()
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_atomic(path: Path | str, payload: bytes) -> Path:
    """Write `payload` atomically over `path` (`robusthyper.files`); an unwritable place is a user error."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return files.write_atomic(path, payload)
    except OSError as err:
        raise UserError(f"cannot write '{path}' ({err.strerror}); pass a writable path") from None


def check_writable(path: Path | str) -> None:
    """Fail before any work when an output file cannot be written (a folder, or an unwritable folder)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--junit-xml '{path}' is a folder; pass a file path such as gate.xml")
    files.ensure_writable(path.parent, "pass a writable --junit-xml path")
