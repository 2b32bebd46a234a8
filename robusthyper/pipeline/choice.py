"""Which executor `--executor NAME` means (`make_executor`): above both executors, so that neither imports
the other."""

from __future__ import annotations

from robusthyper.errors import UserError
from robusthyper.pipeline.executors import Executor, LocalExecutor

EXECUTORS = ("local", "ray")
"""The names `--executor` takes."""


def make_executor(name: str = "local", *, address: str | None = None, cpus_per_cell: int | None = None,
                  gpus_per_cell: float | None = None) -> Executor:  # fmt: skip
    """The executor `--executor NAME` names, with its options; options of another executor, an unknown name
    and `ray` without Ray installed are one-line `UserError`s (before anything is loaded or written)."""
    name = name.strip().lower()
    if name not in EXECUTORS:
        raise UserError(f"--executor '{name}' is not one of {', '.join(EXECUTORS)}")
    if name == "local":
        given = [flag for flag, value in (("--address", address), ("--cpus-per-cell", cpus_per_cell),
                                          ("--gpus-per-cell", gpus_per_cell)) if value is not None]  # fmt: skip
        if given:
            raise UserError(f"{given[0]} needs --executor ray")
        return LocalExecutor()
    import importlib.util

    from robusthyper.pipeline.ray_executor import INSTALL_HINT, RayExecutor

    if importlib.util.find_spec("ray") is None:
        raise UserError(f"--executor ray needs Ray, which is not installed; {INSTALL_HINT}")
    return RayExecutor(address, 1 if cpus_per_cell is None else cpus_per_cell,
                       0.0 if gpus_per_cell is None else float(gpus_per_cell))  # fmt: skip
