"""Cell records on disk: `<run>/cells/<key>.parquet`, one per finished cell, so an interrupted run resumes.

A record holds the cell's per-example table, with its result rows, the payload it was computed under and the
robusthyper version that wrote it (information, not part of the key) in the file's metadata; it is written
under a temporary name and renamed (`robusthyper.files.atomic_path`). A record that is unreadable or was
computed under other settings is never trusted: the cell is recomputed.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import robusthyper
from robusthyper.errors import UserError
from robusthyper.files import atomic_path
from robusthyper.pipeline.plan import Cell
from robusthyper.run import schema as s
from robusthyper.run.folder import check_version, read_meta

log = logging.getLogger(__name__)

CELL_META_KEY = b"robusthyper.cell"


@dataclass
class CellRecord:
    """A finished cell: its result rows, its per-example table (empty for OOD and probe cells), the seconds
    it took and where it ran."""

    key: str
    rows: list[dict[str, Any]]
    examples: pd.DataFrame
    seconds: float = 0.0
    node: str = "local"


def _expected(payload: Any) -> Any:
    return json.loads(json.dumps(payload, sort_keys=True, default=str, allow_nan=True))


class CellStore:
    """The `cells/` folder of a run folder."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = Path(run_dir) / s.CELLS

    def prepare(self, overwrite: bool = False) -> None:
        """Create the folder (emptied with `overwrite`) and remove what a killed write left behind."""
        if overwrite and self.folder.is_dir():
            shutil.rmtree(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create '{self.folder}' ({err.strerror or err}); pass another --out folder") from None
        for stale in self.folder.glob(".*.partial"):
            stale.unlink(missing_ok=True)

    def recorded(self) -> list[Path]:
        return sorted(self.folder.glob("*.parquet")) if self.folder.is_dir() else []

    def write(self, cell: Cell, record: CellRecord) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(record.examples, preserve_index=False)
        info = json.dumps({"key": cell.payload, "rows": record.rows, "seconds": record.seconds, "node": record.node,
                           "robusthyper": robusthyper.__version__}, default=str, allow_nan=True).encode()  # fmt: skip
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), CELL_META_KEY: info})
        final = self.folder / f"{cell.key}.parquet"
        with atomic_path(final) as tmp:
            pq.write_table(table, tmp)
        return final

    def read(self, cell: Cell) -> CellRecord | None:
        """The recorded cell, or None when it is missing, unreadable or recorded under other settings."""
        import pyarrow.parquet as pq

        path = self.folder / f"{cell.key}.parquet"
        if not path.is_file():
            return None
        try:
            table = pq.read_table(path)
            info = json.loads((table.schema.metadata or {})[CELL_META_KEY])
        except Exception as err:  # noqa: BLE001 - a damaged cell is recomputed, never trusted
            log.warning("recorded cell %s is unreadable (%s); recomputing it", path.name, type(err).__name__)
            return None
        if info.get("key") != _expected(cell.payload):
            log.warning("recorded cell %s was computed under other settings; recomputing it", path.name)
            return None
        metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != CELL_META_KEY}
        examples = table.replace_schema_metadata(metadata).to_pandas()
        return CellRecord(cell.key, list(info["rows"]), examples, float(info.get("seconds", 0.0)),
                          str(info.get("node", "local")))  # fmt: skip


def open_run_folder(run_dir: Path, *, resume: bool, overwrite: bool) -> int:
    """Fail early (before anything is loaded or written) when `run_dir` cannot hold this run; return how
    many cells it already records."""
    from robusthyper.files import ensure_writable

    hint = "pass another --out folder"
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run folder '{run_dir}' is a file; {hint}")
    probe = run_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"run folder '{run_dir}' cannot be created: '{probe}' is a file; {hint}")
    ensure_writable(probe, hint)
    if not run_dir.exists():
        return 0
    cells = CellStore(run_dir).recorded()
    if overwrite:
        return len(cells)
    check_version(read_meta(run_dir), run_dir)  # another schema version: one line, unless --overwrite
    has_results = any((run_dir / name).exists() for name in (s.RESULTS_CSV, s.RESULTS_PARQUET))
    if not (run_dir / s.CELLS).is_dir():
        if has_results:
            raise UserError(f"'{run_dir}' holds results that no sweep recorded; {hint} or add --overwrite")
        if [p for p in run_dir.iterdir() if not p.name.startswith(".")]:
            raise UserError(f"run folder '{run_dir}' is not empty and holds no sweep; {hint}")
    if cells and not resume:
        raise UserError(f"'{run_dir}' already records {len(cells)} cell(s); resume it (--resume), discard them "
                        f"(--overwrite), or {hint}")  # fmt: skip
    return len(cells)
