"""Tests of the Ray executor (robusthyper.pipeline.ray_executor) on a two-node Ray cluster on 127.0.0.1: a
sweep on Ray gives the same tables as in this process and names each cell's node in meta.json; an address
that cannot be reached is one line and exit code 2 with nothing written; a node whose raylet is killed
mid-sweep costs nothing but time (Ray reruns its cells on the other node, each cell is recorded once).

The cluster is Ray's own test cluster (`ray.cluster_utils.Cluster`: a head and a worker node, one CPU each,
processes of this test run), every process on the loopback (`loopback_env`), dashboard and usage stats off;
it is torn down after the module however the tests end. Each driver connection (`RayExecutor`) is closed by
the sweep that opened it.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import tiny_recipe

from robusthyper.pipeline.ray_executor import LOOPBACK, loopback_env

loopback_env()  # before Ray is imported: every node and the driver stay on 127.0.0.1
ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'robusthyper[ray]')")

from ray.cluster_utils import Cluster  # noqa: E402

from robusthyper import store, sweep  # noqa: E402
from robusthyper.attacks import make_spec  # noqa: E402
from robusthyper.data import Dataset, Split  # noqa: E402
from robusthyper.pipeline.ray_executor import RayExecutor  # noqa: E402
from robusthyper.run.schema import CELLS, META  # noqa: E402
from robusthyper.train import fit  # noqa: E402

N, BATCH = 24, 12
FAST = {"k_attack": 2, "k_eval": 4}
SPECS = [make_spec(attack="fgsm", eps=0.1, **FAST), make_spec(attack="pgd", eps=0.1, steps=3, **FAST)]
MODELS = ["tiny-det", "tiny-mcd"]
# GCS health checks every second, a node dead after 5 misses: the killed node is given up in about 5 s, not 30.
HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000, "health_check_timeout_ms": 1000,
          "health_check_failure_threshold": 5}  # fmt: skip


def _pids(nodes: list) -> list[int]:
    return [info.process.pid for node in nodes for infos in node.all_processes.values() for info in infos
            if info.process is not None]  # fmt: skip


TEST_LIMIT_S = 150
"""No test here waits longer: past it the test process dumps its stacks and exits (Ray's reaper then stops
the cluster's processes), so a hung cluster fails the run instead of hanging it."""


@pytest.fixture(autouse=True)
def bounded() -> Iterator[None]:
    faulthandler.dump_traceback_later(TEST_LIMIT_S, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, object, object]]:
    """A head and a worker node on 127.0.0.1, one CPU each (bounded waits); stopped however the tests end."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    made = Cluster(shutdown_at_exit=True)
    started = []
    try:
        head = made.add_node(num_cpus=1, node_ip_address=LOOPBACK, include_dashboard=False, _system_config=HEALTH)
        started.append(head)
        worker = made.add_node(num_cpus=1, node_ip_address=LOOPBACK, include_dashboard=False)
        started.append(worker)
        made.wait_for_nodes(timeout=60)
        yield made, head, worker
    finally:
        pids = _pids(started)
        if ray.is_initialized():
            ray.shutdown()
        try:
            made.shutdown()
        finally:
            for pid in pids:  # whatever the shutdown left behind, by the ids of the processes it started
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture(scope="module")
def model_store(tmp_path_factory, mnist5k) -> Path:
    """Two tiny MLPs, trained for a moment (det on 600 digits; mcd, whose dropout makes it stochastic)."""
    root = tmp_path_factory.mktemp("store")
    data = Dataset(mnist5k.info, Split(mnist5k.train.x[:600], mnist5k.train.y[:600]),
                   Split(mnist5k.test.x[:100], mnist5k.test.y[:100]), None, mnist5k.source)  # fmt: skip
    for kind in ("det", "mcd"):
        recipe = tiny_recipe(kind, val_fraction=0.0).model_copy(update={"name": f"tiny-{kind}"})
        result = fit(recipe, data, progress=False)
        store.save(result.posterior, recipe, result.metrics, root)
    return root


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The driver computes with one torch thread, as each single-CPU Ray task does: then the tables are
    equal bit for bit (another thread count may change float sums in their last bits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sweep(run_dir: Path, model_store: Path, specs=SPECS, **kwargs) -> sweep.SweepResult:
    options = {"n": N, "batch_size": BATCH, "progress": False, "ood": False, "report": False, **kwargs}
    return sweep.run_sweep(run_dir, MODELS, specs, store=model_store, **options)


def _timeless(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["metric"] != "seconds"].reset_index(drop=True)


def _same_tables(one: sweep.SweepResult, other: sweep.SweepResult) -> None:
    pd.testing.assert_frame_equal(_timeless(one.results), _timeless(other.results), check_exact=True)
    pd.testing.assert_frame_equal(one.examples, other.examples, check_exact=True)


def _node_ids(*nodes) -> dict[str, str]:
    return {node.node_id[:12]: name for node, name in zip(nodes, ("head", "worker"), strict=False)}


def test_a_sweep_on_ray_equals_the_local_one(cluster, model_store, tmp_path, one_thread) -> None:
    made, head, worker = cluster
    local = _sweep(tmp_path / "local", model_store)
    on_ray = _sweep(tmp_path / "ray", model_store, executor=RayExecutor(made.address))
    assert not ray.is_initialized()  # the sweep closed the connection it opened
    assert (on_ray.computed, on_ray.reused) == (local.computed, 0) == (6, 0)  # 2 models x (probe + 2 attacks)
    _same_tables(on_ray, local)

    meta = json.loads((tmp_path / "ray" / META).read_text())
    assert meta["executor"]["kind"] == "ray" and meta["executor"]["address"] == made.address
    cells = meta["cells"]["cells"]
    assert [c["key"] for c in cells] == [c["key"] for c in local.meta["cells"]["cells"]]  # the same plan
    nodes = _node_ids(head, worker)
    for cell in cells:  # "<host>/<ray node id>": every cell names the node that ran it
        host, _, node = cell["node"].partition("/")
        assert host == socket.gethostname() and node in nodes, cell
        assert cell["seconds"] > 0 and cell["reused"] is False
    assert sorted(p.stem for p in (tmp_path / "ray" / CELLS).glob("*.parquet")) == sorted(c["key"] for c in cells)

    again = _sweep(tmp_path / "ray", model_store, executor=RayExecutor(made.address))  # resumes: nothing to run
    assert (again.computed, again.reused) == (0, 6)
    reused = json.loads((tmp_path / "ray" / META).read_text())["cells"]["cells"]
    assert all(c["reused"] for c in reused) and [c["node"] for c in reused] == [c["node"] for c in cells]


def test_an_unreachable_address_is_one_line_and_exit_2(cluster, model_store, tmp_path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    out = tmp_path / "runs" / "r"
    args = [sys.executable, "-m", "robusthyper", "sweep", "quick", "--model", "tiny-det", "--store",
            str(model_store), "--out", str(out), "--n", "8", "--device", "cpu", "--no-ood", "--quiet",
            "--executor", "ray", "--address", f"{LOOPBACK}:{port}"]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"no Ray cluster answers at --address {LOOPBACK}:{port}" in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing written
    assert time.monotonic() - started < 30


def _running_cells(raylet_pid: int) -> list[int]:
    """The worker processes of a raylet that are running a cell now (Ray titles them 'ray::_run_cell')."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        ppid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), -1)
        if ppid == raylet_pid and title.startswith("ray::_run_cell"):
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="finds running cells through /proc (Linux)")
def test_a_killed_node_costs_only_time(cluster, model_store, tmp_path, one_thread) -> None:
    """kill -9 of the worker node's raylet while it runs a cell: the sweep finishes, each cell is recorded
    exactly once (Ray reran the lost one on the head) and the table is the local one."""
    made, head, worker = cluster
    specs = [make_spec(attack="pgd", eps=e, steps=40, **FAST) for e in (0.05, 0.1, 0.2, 0.3)]
    local = _sweep(tmp_path / "local", model_store, specs, n=96)
    run_dir = tmp_path / "ray"
    raylet = worker.all_processes["raylet"][0].process
    killed: dict[str, object] = {}

    def kill_while_it_runs_a_cell() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "at" not in killed:
            running = _running_cells(raylet.pid)
            if running:
                recorded = len(list((run_dir / CELLS).glob("*.parquet"))) if (run_dir / CELLS).is_dir() else 0
                os.kill(raylet.pid, signal.SIGKILL)
                killed.update(at=recorded, running=running)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_while_it_runs_a_cell, daemon=True)
    killer.start()
    try:
        on_ray = _sweep(run_dir, model_store, specs, n=96, executor=RayExecutor(made.address))
    finally:
        killer.join(timeout=70)
        made.remove_node(worker, allow_graceful=False)  # the rest of the dead node's processes
    assert "at" in killed, "the worker node never ran a cell"
    cells = on_ray.meta["cells"]["cells"]
    assert killed["at"] < len(cells)  # killed mid-sweep
    assert (on_ray.computed, on_ray.reused) == (10, 0)  # 2 models x (probe + 4 attacks), each once
    assert len({c["key"] for c in cells}) == len(cells) == len(list((run_dir / CELLS).glob("*.parquet")))
    _same_tables(on_ray, local)
    assert raylet.poll() is not None
