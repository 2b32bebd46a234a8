"""The run folder: one contract for what every command writes and every reader reads.

`schema` holds the words (files, columns, inputs, metrics, derived attacks, the version); `folder` the one
writer (`write_run`) and the one reader (`read_run -> Run`); `tables` the tables derived from a run's own
(Wilson intervals, detection AUROCs). The gate and the report are functions of a `Run`.

`Run`, `read_run`, `write_run`, `run_meta` and `new_run_id` are imported from `folder` on first use, so that
`robusthyper.run.schema` loads without pandas (the CLI's `--help` stays instant).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robusthyper.run.folder import Run, new_run_id, read_run, run_meta, write_run

_FROM_FOLDER = ("Run", "new_run_id", "read_run", "run_meta", "write_run")


def __getattr__(name: str) -> Any:
    if name in _FROM_FOLDER:
        from robusthyper.run import folder

        return getattr(folder, name)
    raise AttributeError(f"module 'robusthyper.run' has no attribute {name!r}")


__all__ = ["Run", "new_run_id", "read_run", "run_meta", "write_run"]
