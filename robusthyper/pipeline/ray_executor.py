"""The Ray executor: every cell is a Ray task on a Ray cluster (`--executor ray`).

Driver (`RayExecutor.execute`): connect (`connect`: a private cluster on 127.0.0.1 by default, or an
existing cluster by `--address`), put the `Workload` (the posteriors, on the CPU, and the test split and OOD
inputs) into the object store once (`ray.put`), submit one task per cell (`num_cpus` = cpus per cell,
`num_gpus` = GPUs per cell, `max_retries`), and yield each record as `ray.wait` reports its task finished; the
pipeline writes it into the run folder at once. A task whose worker process or node dies is retried by Ray;
a task only ever returns a whole record, so a cell is never recorded half. An exception raised by a cell's
own code is not retried (it would fail again): it ends the run, and the recorded cells stay.

Worker (`_run_cell`): fetches the Workload once per worker process (cached by its object id, with the clean
evaluations its cells share), moves the models to the cell's device, sets torch's threads to the cpus per cell
and calls `run_cell`, the code the in-process executor runs. Every cell reseeds its RNGs, so the table does
not depend on which worker ran which cell.

Network: Ray on Linux rewrites 127.0.0.1 (as a node's address or a cluster's) to the machine's outward
address and then listens on every interface; on Windows and macOS it keeps the loopback. `loopback_env`
switches Linux to that behaviour (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`) whenever the cluster is on this
machine's loopback, and a private cluster is checked to be on 127.0.0.1 before any work is sent to it.
Usage stats are always off and the dashboard is never started here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from robusthyper.errors import UserError
from robusthyper.pipeline.cells import CellRecord
from robusthyper.pipeline.executors import run_cell
from robusthyper.pipeline.plan import Cell, Workload

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LOCAL = "local"
AUTO = "auto"
CONNECT_TIMEOUT_S = 3.0
"""How long a cluster address may take to accept a TCP connection before it counts as unreachable."""
INSTALL_HINT = "pip install 'robusthyper[ray]'"


def loopback_env() -> None:
    """Keep Ray on 127.0.0.1 in this process and the processes it starts, and usage stats off.

    Call before `import ray` (it also fixes an already imported Ray's switch)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]


def parse_address(address: str | None) -> tuple[str, str | None, int | None]:
    """('local', None, None), ('auto', None, None) or ('address', host, port); a malformed one is a
    `UserError`."""
    if address is None or address.strip() in ("", LOCAL):
        return LOCAL, None, None
    address = address.strip()
    if address == AUTO:
        return AUTO, None, None
    hint = f"--address '{address}' is not auto, local or HOST:PORT (e.g. 127.0.0.1:6379)"
    if "://" in address:
        raise UserError(f"{hint}; Ray client addresses (ray://) are not supported, run the driver on a node")
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(hint)
    return "address", host, int(port)


def _reachable(host: str, port: int, address: str) -> None:
    """A bounded check that something listens at host:port (Ray itself would retry for minutes)."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise UserError(
            f"no Ray cluster answers at --address {address} ({err.strerror or type(err).__name__} within "
            f"{CONNECT_TIMEOUT_S:g} s); start one there with `ray start --head`, or leave --address out for a "
            "private local cluster"
        ) from None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed; {INSTALL_HINT}") from None
    return ray


def connect(address: str | None = None) -> bool:
    """Connect this process to a Ray cluster; True when this call connected it (and `ray.shutdown` is the
    caller's to call), False when it was connected already (then that connection is used as it is).

    `address` None or 'local': start a private cluster on 127.0.0.1 (this machine's cores; it ends with the
    connection). 'auto': the cluster `ray start` started on this machine. 'HOST:PORT': that cluster's head;
    the driver must run on one of its nodes. An unreachable address is a `UserError` within a few seconds."""
    mode, host, port = parse_address(address)
    if mode != "address" or (host or "") in LOOPBACK_HOSTS:
        loopback_env()
    else:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if mode == "address":
        assert host is not None and port is not None
        _reachable(host, port, str(address))
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if mode == LOCAL:
            ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False, **quiet)
        else:
            ray.init(address=AUTO if mode == AUTO else f"{host}:{port}", **quiet)
    except (ConnectionError, TimeoutError) as err:
        where = "on this machine (--address auto)" if mode == AUTO else f"at --address {address}"
        raise UserError(f"cannot connect to a Ray cluster {where}: {str(err).splitlines()[0]}; start one with "
                        "`ray start --head`, or leave --address out for a private local cluster") from None  # fmt: skip
    if mode == LOCAL:
        outward = sorted({n["NodeManagerAddress"] for n in ray.nodes() if n["NodeManagerAddress"] != LOOPBACK})
        if outward:
            ray.shutdown()
            raise RuntimeError(f"the private Ray cluster listens on {outward[0]}, not on {LOOPBACK}; stopped it")
    return True


def _fits(ray: Any, cpus: float, gpus: float) -> bool:
    for node in ray.nodes():
        have = node.get("Resources", {})
        if node.get("Alive") and have.get("CPU", 0) >= cpus and have.get("GPU", 0) >= gpus:
            return True
    return False


def _on_cpu(work: Workload) -> Workload:
    """The workload with every posterior on the CPU (a copy of those that are not), so that it unpickles on
    any node; a worker moves it to the cell's device."""
    import copy

    models = {name: m if m.posterior.device.type == "cpu"
              else dataclasses.replace(m, posterior=copy.deepcopy(m.posterior).to("cpu"))
              for name, m in work.models.items()}  # fmt: skip
    return dataclasses.replace(work, models=models)


_WORKLOADS: dict[str, tuple[Workload, dict[tuple[Any, ...], Any]]] = {}
"""Per worker process: the workload of the running plan (by object id) and its shared clean evaluations."""


def _run_cell(cell: Cell, boxed: list[Any], threads: int, device: str) -> CellRecord:
    """One cell on a Ray worker (`boxed`: the workload's object ref, in a list so that Ray passes the ref
    rather than a fresh copy of the workload per task)."""
    import ray
    import torch

    torch.set_num_threads(threads)
    ref = boxed[0]
    key = ref.hex()
    if key not in _WORKLOADS:
        _WORKLOADS.clear()
        work: Workload = ray.get(ref)
        if device != "cpu":
            for model in work.models.values():
                model.posterior.to(device)
        _WORKLOADS[key] = (work, {})
    work, clean_cache = _WORKLOADS[key]
    record = run_cell(cell, work, clean_cache)
    record.node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    return record


@dataclasses.dataclass
class RayExecutor:
    """Each cell a Ray task (see the module docstring). `address`: None/'local', 'auto' or 'HOST:PORT'
    (`connect`). `cpus_per_cell`: Ray CPUs per task and torch threads in it. `gpus_per_cell`: Ray GPUs per
    task (fractions share a GPU); needs --device cuda. `max_retries`: how often Ray reruns a cell whose worker
    or node died."""

    address: str | None = None
    cpus_per_cell: int = 1
    gpus_per_cell: float = 0.0
    max_retries: int = 3
    _connected: bool = dataclasses.field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        parse_address(self.address)
        if isinstance(self.cpus_per_cell, bool) or not isinstance(self.cpus_per_cell, int) or self.cpus_per_cell < 1:
            raise UserError(f"--cpus-per-cell {self.cpus_per_cell} must be a whole number >= 1")
        if not 0 <= self.gpus_per_cell < float("inf"):
            raise UserError(f"--gpus-per-cell {self.gpus_per_cell} must be >= 0 (e.g. 1, or 0.5 to share a GPU)")
        if self.max_retries < 0:
            raise UserError(f"max_retries {self.max_retries} must be >= 0")

    @property
    def meta(self) -> dict[str, Any]:
        return {"kind": "ray", "address": self.address or LOCAL, "cpus_per_cell": self.cpus_per_cell,
                "gpus_per_cell": self.gpus_per_cell, "max_retries": self.max_retries}  # fmt: skip

    def start(self) -> bool:
        """Connect (once) and check that one cell fits on a node; True when this call connected. Bad
        options and an unreachable cluster are `UserError`s, before anything is written."""
        if self._connected:
            return False
        owned = connect(self.address)
        import ray

        if not _fits(ray, self.cpus_per_cell, self.gpus_per_cell):
            if owned:
                ray.shutdown()
            raise UserError(f"no node of the Ray cluster has {self.cpus_per_cell} CPU(s) and {self.gpus_per_cell:g} "
                            "GPU(s) free for one cell; lower --cpus-per-cell / --gpus-per-cell or add nodes")  # fmt: skip
        self._connected = owned
        return owned

    def close(self) -> None:
        """Disconnect when `start` connected (a private cluster stops with it)."""
        if self._connected:
            import ray

            ray.shutdown()
            self._connected = False

    def execute(self, cells: Sequence[Cell], work: Workload) -> Iterator[CellRecord]:
        if not cells:
            return
        device = next(iter(work.models.values())).posterior.device.type
        if device == "cuda" and self.gpus_per_cell <= 0:
            raise UserError("the models are on cuda: pass --gpus-per-cell (e.g. 1) so that Ray gives each cell a GPU")
        if device == "cpu" and self.gpus_per_cell > 0:
            raise UserError(f"--gpus-per-cell {self.gpus_per_cell:g} needs --device cuda (the models are on the CPU)")
        opened = self.start()
        try:
            yield from self._execute(cells, work, device)
        finally:
            if opened:
                self.close()

    def _execute(self, cells: Sequence[Cell], work: Workload, device: str) -> Iterator[CellRecord]:
        import ray
        from ray.exceptions import RayTaskError

        started = time.perf_counter()
        shipped = ray.put(_on_cpu(work))
        log.info("workload in the object store (%.1f s); %d cells to run on Ray", time.perf_counter() - started,
                 len(cells))  # fmt: skip
        task = ray.remote(_run_cell).options(num_cpus=self.cpus_per_cell, num_gpus=self.gpus_per_cell,
                                             max_retries=self.max_retries, retry_exceptions=False)  # fmt: skip
        pending = {task.remote(cell, [shipped], self.cpus_per_cell, device): cell for cell in cells}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    cell = pending.pop(ref)
                    try:
                        record = ray.get(ref)
                    except RayTaskError:
                        raise  # the cell's own error (also an instance of the original exception's class)
                    except ray.exceptions.RayError as err:
                        raise RuntimeError(f"cell {cell.label} failed on the Ray cluster after {self.max_retries} "
                                           f"retries: {str(err).splitlines()[0]}") from err  # fmt: skip
                    yield record
        finally:
            for ref in pending:  # interrupted or failed: stop what is still queued or running
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort; the connection is closed next
                    pass
