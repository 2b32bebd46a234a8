"""Writing a run's results: `reports/<run-id>/{results.csv, results.parquet, examples.parquet, meta.json}`.

The folder is written under a temporary name and renamed when complete, so a crash or an interrupt never
leaves a half-written report that looks valid. `results` is the tidy table of `robusthyper.evaluate.run`
(one row per model, attack, eps, input and metric, with its settings); CSV for people, parquet (when pyarrow
is installed) for typed reading; `meta.json` holds versions, git commit, device and the full specs.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import robusthyper
from robusthyper.errors import UserError
from robusthyper.files import ensure_writable

RESULTS_CSV = "results.csv"
FLAGS_CSV = "flags.csv"
"""A sweep's sanity flags (`robusthyper.sanity.flags_to_frame`), one row per flag; headers only when clean."""
RESULTS_PARQUET = "results.parquet"
EXAMPLES_PARQUET = "examples.parquet"
EXAMPLES_CSV = "examples.csv"
META = "meta.json"
DEFAULT_REPORTS = "reports"
SCHEMA_VERSION = 1
"""Version of the tables' layout (columns and their meaning), written to meta.json as `schema_version`;
readers reject a run folder that declares another version. Bump it when a column changes meaning."""


def new_run_id(prefix: str = "attack") -> str:
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}-{prefix}"


def versions() -> dict[str, str]:
    out = {"robusthyper": robusthyper.__version__, "python": sys.version.split()[0],
           "platform": platform.platform()}  # fmt: skip
    for name in ("torch", "numpy", "pandas", "art"):
        try:
            module = __import__(name)
            out["adversarial-robustness-toolbox" if name == "art" else name] = str(module.__version__)
        except Exception:  # noqa: BLE001 - a missing optional package is just not recorded
            pass
    return out


def git_commit() -> dict[str, Any]:
    """HEAD of the repository robusthyper runs from, and whether its tree is dirty (None outside git)."""
    root = Path(robusthyper.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip() != ""  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def _has_parquet() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def writable_root(root: Path | str) -> Path:
    return ensure_writable(Path(root), "pass --out DIR with a writable reports folder")


def full_meta(meta: dict[str, Any], run_id: str) -> dict[str, Any]:
    """`meta` with the run id, the schema version, a timestamp, package versions and the git commit."""
    written = datetime.now(timezone.utc).isoformat()
    return {"run_id": run_id, "schema_version": SCHEMA_VERSION, "written": written, "versions": versions(),
            "git": git_commit(), **meta}  # fmt: skip


def write_report(
    results: pd.DataFrame,
    meta: dict[str, Any],
    root: Path | str = DEFAULT_REPORTS,
    run_id: str | None = None,
    examples: pd.DataFrame | None = None,
    flags: pd.DataFrame | None = None,
) -> Path:
    """Write `<root>/<run_id>/` atomically and return it; `meta` gains versions, git and timestamps.

    `flags` (the sanity flags, `robusthyper.sanity.flags_to_frame`) goes into `flags.csv` inside the same
    atomic write, so a run folder never exists without the flags file the gate requires."""
    root = writable_root(root)
    run_id = run_id or new_run_id()
    final = root / run_id
    if final.exists():
        raise UserError(f"report folder '{final}' already exists; pass another --run-id")
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{run_id}-", dir=root))
    try:
        results.to_csv(tmp / RESULTS_CSV, index=False)
        parquet = _has_parquet()
        if parquet:
            results.to_parquet(tmp / RESULTS_PARQUET, index=False)
        if examples is not None and len(examples):
            if parquet:
                examples.to_parquet(tmp / EXAMPLES_PARQUET, index=False)
            else:
                examples.to_csv(tmp / EXAMPLES_CSV, index=False)
        if flags is not None:
            flags.to_csv(tmp / FLAGS_CSV, index=False)
        (tmp / META).write_text(json.dumps(full_meta(meta, run_id), indent=2, default=str), encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_into(
    folder: Path,
    results: pd.DataFrame,
    meta: dict[str, Any],
    examples: pd.DataFrame | None = None,
    flags: pd.DataFrame | None = None,
) -> None:
    """Write the tables and meta.json into an existing run folder (a sweep's), each file under a temporary
    name and renamed, meta.json last; files of an earlier write are replaced, never left half-written.
    `flags`: the sanity flags' table, written as `FLAGS_CSV` (headers only when it is empty)."""
    staged: list[tuple[Path, str]] = []
    writers = _table_writers(results, examples)
    if flags is not None:
        writers.append((FLAGS_CSV, lambda p: flags.to_csv(p, index=False)))
    try:
        for name, write in writers:
            tmp = folder / f".{name}.{os.getpid()}.partial"
            staged.append((tmp, name))
            write(tmp)
        tmp = folder / f".{META}.{os.getpid()}.partial"
        staged.append((tmp, META))
        payload = json.dumps(full_meta(meta, folder.name), indent=2, default=str)
        tmp.write_text(payload, encoding="utf-8")
        for tmp, name in staged:
            os.replace(tmp, folder / name)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise


def _table_writers(results: pd.DataFrame, examples: pd.DataFrame | None) -> list[tuple[str, Any]]:
    writers: list[tuple[str, Any]] = [(RESULTS_CSV, lambda p: results.to_csv(p, index=False))]
    parquet = _has_parquet()
    if parquet:
        writers.append((RESULTS_PARQUET, lambda p: results.to_parquet(p, index=False)))
    if examples is not None and len(examples):
        if parquet:
            writers.append((EXAMPLES_PARQUET, lambda p: examples.to_parquet(p, index=False)))
        else:
            writers.append((EXAMPLES_CSV, lambda p: examples.to_csv(p, index=False)))
    return writers


def check_schema(folder: Path | str) -> dict[str, Any]:
    """meta.json of a run folder ({} when absent); a declared `schema_version` other than `SCHEMA_VERSION`
    is a one-line `UserError`."""
    path = Path(folder) / META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"'{path}' is not valid JSON ({err}); re-run the sweep") from None
    if not isinstance(meta, dict):
        raise UserError(f"'{path}' does not hold a JSON object; re-run the sweep")
    found = meta.get("schema_version", SCHEMA_VERSION)
    if found != SCHEMA_VERSION:
        raise UserError(
            f"'{folder}' holds results of schema version {found!r}; this robusthyper reads version "
            f"{SCHEMA_VERSION}; re-run the sweep or use the robusthyper that wrote it"
        )
    return meta


def read_results(folder: Path | str) -> pd.DataFrame:
    """The tidy results table of a report folder (parquet when present, else CSV); a folder whose meta.json
    declares another schema version is a `UserError`."""
    folder = Path(folder)
    check_schema(folder)
    if (folder / RESULTS_PARQUET).is_file():
        return pd.read_parquet(folder / RESULTS_PARQUET)
    if (folder / RESULTS_CSV).is_file():
        return pd.read_csv(folder / RESULTS_CSV)
    raise UserError(f"'{folder}' holds no {RESULTS_CSV} or {RESULTS_PARQUET}; is it a report folder?")
