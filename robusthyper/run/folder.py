"""Reading and writing a run folder: the one reader and the one writer of `reports/<run>/`.

A run folder holds `results.parquet` (and `results.csv` for people), `examples.parquet`, `flags.csv` and
`meta.json` (`robusthyper.run.schema`). `write_run` stages every file under a temporary name and renames
them together, meta.json last, so a reader never meets a half-written table. `read_run` returns a `Run`
with typed tables; a folder of an older schema version goes through one documented conversion
(`convert_v1`), one of a newer version is refused in one line.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import robusthyper
from robusthyper.errors import UserError
from robusthyper.run import schema as s


@dataclass
class Run:
    """A run's tables: `results` (tidy), `examples` (per example, or None), `flags` (the sanity flags, or
    None when the run recorded none) and `meta` (meta.json, {} when absent). `notes` says what the reader
    had to leave out or convert, for the report to show."""

    folder: Path | None
    results: pd.DataFrame
    examples: pd.DataFrame | None = None
    flags: pd.DataFrame | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        results: pd.DataFrame,
        examples: pd.DataFrame | None = None,
        flags: pd.DataFrame | None = None,
        meta: dict[str, Any] | None = None,
        what: str = "results",
    ) -> Run:
        """A run from tables in memory (the Python API's way in), checked and converted like a folder's."""
        meta = dict(meta or {})
        version = meta.get("schema_version", 1)
        return _checked(None, results, examples, flags, meta, version, what)

    @property
    def name(self) -> str:
        return self.meta.get("run_id") or (self.folder.name if self.folder is not None else "run")


# ------------------------------------------------------------------------------------------------- meta


def versions() -> dict[str, str]:
    """Versions of robusthyper, Python and the numerical stack, for meta.json."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"robusthyper": robusthyper.__version__, "python": sys.version.split()[0],
           "platform": platform.platform()}  # fmt: skip
    for name in ("torch", "numpy", "pandas", "adversarial-robustness-toolbox"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def git_commit() -> dict[str, Any]:
    """HEAD of the checkout robusthyper runs from, and whether its tree is dirty; None for an installed copy
    (no .git beside the package), which must not report the commit of whatever repository holds its venv."""
    root = Path(robusthyper.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip() != ""  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def run_meta(run_id: str, **fields: Any) -> dict[str, Any]:
    """meta.json of a run: its id, the schema version, when it was written, package versions, the git
    commit, then `fields` (command, device, models, specs, ...)."""
    written = datetime.now(timezone.utc).isoformat()
    return {"run_id": run_id, "schema_version": s.SCHEMA_VERSION, "written": written, "versions": versions(),
            "git": git_commit(), **fields}  # fmt: skip


def new_run_id(prefix: str = "attack") -> str:
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}-{prefix}"


# ------------------------------------------------------------------------------------------------- writing


def write_run(
    folder: Path,
    results: pd.DataFrame,
    meta: dict[str, Any],
    examples: pd.DataFrame | None = None,
    flags: pd.DataFrame | None = None,
) -> Path:
    """Write the tables and meta.json into `folder` (created if needed): each file under a temporary name,
    then all renamed, meta.json last; files of an earlier write are replaced, never left half-written.
    `meta` is written as given (build it with `run_meta`); `flags` as flags.csv (headers only when empty)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writers: list[tuple[str, Any]] = [(s.RESULTS_CSV, lambda p: results.to_csv(p, index=False)),
                                      (s.RESULTS_PARQUET, lambda p: results.to_parquet(p, index=False))]  # fmt: skip
    if examples is not None and len(examples):
        writers.append((s.EXAMPLES_PARQUET, lambda p: examples.to_parquet(p, index=False)))
    if flags is not None:
        writers.append((s.FLAGS_CSV, lambda p: flags.to_csv(p, index=False)))
    payload = json.dumps(meta, indent=2, default=str)
    writers.append((s.META, lambda p: p.write_text(payload, encoding="utf-8")))
    staged: list[tuple[Path, str]] = []
    try:
        for name, write in writers:
            tmp = folder / f".{name}.{os.getpid()}.partial"
            staged.append((tmp, name))
            write(tmp)
        for tmp, name in staged:
            os.replace(tmp, folder / name)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return folder


# ------------------------------------------------------------------------------------------------- reading


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise UserError(f"cannot read '{path}' ({type(err).__name__}); is it a robusthyper results file?") from None


def _read_flags(path: Path) -> pd.DataFrame | None:
    """flags.csv, or None without one; an unreadable file is an empty table without columns (the reader
    then notes that the flags are not shown: a broken flags file must not cost a whole report)."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except Exception:  # noqa: BLE001 - checked by its columns in _checked
        return pd.DataFrame()


def read_meta(folder: Path) -> dict[str, Any]:
    """meta.json of a run folder ({} when absent); unreadable JSON is a one-line `UserError`."""
    path = folder / s.META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"'{path}' is not valid JSON ({err}); re-run the evaluation") from None
    if not isinstance(meta, dict):
        raise UserError(f"'{path}' does not hold a JSON object; re-run the evaluation")
    return meta


def check_version(meta: dict[str, Any], where: Path | str) -> int:
    """The schema version a folder declares (1 when it declares none); a newer one is a `UserError`."""
    version = meta.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= s.SCHEMA_VERSION:
        raise UserError(
            f"'{where}' holds results of schema version {version!r}; this robusthyper reads versions 1 to "
            f"{s.SCHEMA_VERSION}; re-run the evaluation with this robusthyper or use the one that wrote it"
        )
    return version


def read_run(path: Path | str, what: str = "run folder") -> Run:
    """A run folder, or a results file (.csv or .parquet, with the flags.csv beside it if any).

    A missing path, a folder without results, unreadable files, a table without the required columns and a
    newer schema version are one-line `UserError`s; an older version is converted (`convert_v1`)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} '{path}' does not exist; pass a run folder such as reports/<run-id>")
    if path.is_file():
        if path.suffix not in (".csv", ".parquet"):
            raise UserError(f"{what} '{path}' is not a .csv or .parquet results file, nor a run folder")
        flags_path = path.parent / s.FLAGS_CSV
        flags = _read_flags(flags_path)
        return _checked(path.parent, _read_table(path), None, flags, {}, 1, str(path))
    meta = read_meta(path)
    version = check_version(meta, path)
    results_path = next((path / n for n in (s.RESULTS_PARQUET, s.RESULTS_CSV) if (path / n).is_file()), None)
    if results_path is None:
        raise UserError(f"{what} '{path}' holds no {s.RESULTS_CSV} or {s.RESULTS_PARQUET}; is it a run folder?")
    examples_path = next((path / n for n in (s.EXAMPLES_PARQUET, s.EXAMPLES_CSV) if (path / n).is_file()), None)
    examples = _read_table(examples_path) if examples_path is not None else None
    flags = _read_flags(path / s.FLAGS_CSV)
    return _checked(path, _read_table(results_path), examples, flags, meta, version, str(results_path))


def _checked(
    folder: Path | None,
    results: pd.DataFrame,
    examples: pd.DataFrame | None,
    flags: pd.DataFrame | None,
    meta: dict[str, Any],
    version: int,
    where: str,
) -> Run:
    """Check the tables' columns, normalise their types, convert an older version."""
    missing = [c for c in s.REQUIRED_RESULTS if c not in results.columns]
    if missing:
        raise UserError(
            f"'{where}' lacks column(s) {', '.join(missing)}: not a robusthyper results table (or an "
            "incompatible schema); re-run the evaluation with this robusthyper"
        )
    if results.empty:
        raise UserError(f"'{where}' holds no rows; the run produced no results")
    run = Run(folder, results.copy(), None if examples is None else examples.copy(), flags, meta)
    if version < s.SCHEMA_VERSION:
        convert_v1(run)
    run.results[s.VALUE] = pd.to_numeric(run.results[s.VALUE], errors="coerce")
    run.results[s.EPS] = pd.to_numeric(run.results[s.EPS], errors="coerce")
    for column in (s.MODEL, s.ATTACK, s.FAMILY, s.PROTOCOL, s.INPUT, s.METRIC):
        run.results[column] = run.results[column].astype(str)
    run.examples = _usable(run, run.examples, s.REQUIRED_EXAMPLES, "the per-example table",
                           "the tables drawn from it (detection AUROCs, reliability) are left out")  # fmt: skip
    if run.examples is not None:
        for column in (s.MODEL, s.ATTACK, s.FAMILY):
            run.examples[column] = run.examples[column].astype(str)
    run.flags = _usable(run, run.flags, s.FLAG_COLUMNS, f"the sanity flags ({s.FLAGS_CSV})",
                        "not a robusthyper flags table, so the sanity flags are not shown")  # fmt: skip
    if run.flags is not None:
        run.flags = run.flags[list(s.FLAG_COLUMNS)].astype({"code": str, "severity": str, "model": str,
                                                             "attack": str, "message": str})  # fmt: skip
        run.flags["eps"] = pd.to_numeric(run.flags["eps"], errors="coerce")
    return run


def _usable(run: Run, table: pd.DataFrame | None, required: tuple[str, ...], what: str,
            consequence: str) -> pd.DataFrame | None:  # fmt: skip
    """`table` when it has the `required` columns; else None, with a note on the run saying what is lost."""
    if table is None:
        return None
    missing = [c for c in required if c not in table.columns]
    if missing:
        run.notes.append(f"{what} lacks column(s) {', '.join(missing)}: {consequence}")
        return None
    return table


def convert_v1(run: Run) -> None:
    """Version 1 -> 2, in place: `family` from each attack label (`robusthyper.attacks.family_of_label`;
    the derived attacks keep their own word), `protocol` 'strong' where it is missing (OOD rows had none);
    a per-example table without `k_attack` (runs before 2026-11) is left out with a note, since several
    K_attack of one attack could not be told apart."""
    def families(labels: pd.Series) -> pd.Series:
        from robusthyper.attacks import family_of_label

        return labels.astype(str).map(family_of_label)

    results = run.results
    if s.FAMILY not in results.columns:
        results[s.FAMILY] = families(results[s.ATTACK])
    if s.PROTOCOL not in results.columns:
        results[s.PROTOCOL] = s.STRONG
    results[s.PROTOCOL] = results[s.PROTOCOL].fillna(s.STRONG)
    if run.examples is not None:
        if s.K_ATTACK not in run.examples.columns:
            run.notes.append("this run (schema version 1) records no k_attack per example: the tables drawn "
                             "from its examples are left out; re-run it to get them")  # fmt: skip
            run.examples = None
        elif s.FAMILY not in run.examples.columns:
            run.examples[s.FAMILY] = families(run.examples[s.ATTACK])
