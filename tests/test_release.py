"""The release: the sdist and the wheel carry every recipe, suite and preset, the report template and the
license, and the wheel, installed into a fresh virtual environment, runs the README's commands from a folder
outside any checkout.

Nothing is downloaded: both are built without build isolation by this environment's setuptools, and the new
venv reaches this environment's installed dependencies (torch included) through a `.pth` file pointing at a
folder of links to them, which leaves out robusthyper itself, so only the installed wheel can answer.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from packaging.version import Version

import robusthyper
from robusthyper.pipeline.cells import CELL_META_KEY

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
VERSION = robusthyper.__version__
# Never copied into the build: git's and the builds' own files, and what the commands write into a checkout.
NOT_SOURCE_TOP = {".git", "build", "dist", ".venv", "reports", "models", "data"}
NOT_SOURCE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*_cache")


def _not_source(folder: str, names: list[str]) -> set[str]:
    top = {n for n in names if n in NOT_SOURCE_TOP} if Path(folder).resolve() == ROOT else set()
    return top | NOT_SOURCE(folder, names)


def _files(folder: str, pattern: str) -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob(pattern) if p.is_file())


def expected_in_wheel() -> set[str]:
    """Every module of the package, its marker and template, and every top-level recipe and attack file mapped
    into it (compared against the folders, so a new one is checked without editing this test)."""
    package = _files("robusthyper", "*.py") + ["robusthyper/py.typed"] + _files("robusthyper/report/templates", "*")
    data = {f"robusthyper/_data/{f}" for f in _files("defenses", "*.toml") + _files("attacks", "*.toml")}
    return set(package) | data


def expected_in_sdist() -> set[str]:
    top = {"LICENSE", "README.md", "pyproject.toml"}
    return top | {f for f in expected_in_wheel() if not f.startswith("robusthyper/_data/")} | set(
        _files("defenses", "*.toml") + _files("attacks", "*.toml")
    )


def run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run a command; its output is the failure message when it exits non-zero, and its time goes to stderr
    (shown with a failure, to tell a slow step from a stuck one)."""
    t0 = time.perf_counter()
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"{time.perf_counter() - t0:6.1f} s  {' '.join(str(c) for c in cmd)[:150]}", file=sys.stderr)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def check_build_tools() -> None:
    """Skip (one line) when this environment cannot build or make a venv offline: none of it is the project's."""
    if os.name != "posix":
        pytest.skip("builds a POSIX venv (bin/); run it on Linux or macOS")
    try:
        import venv  # noqa: F401

        setuptools = Version(importlib.metadata.version("setuptools"))
        importlib.metadata.version("pip")
    except (ImportError, importlib.metadata.PackageNotFoundError) as err:
        pytest.skip(f"needs venv, pip and setuptools in the test environment ({err})")
    if setuptools < Version("77"):
        pytest.skip(f"needs setuptools >= 77 to build without downloading it (found {setuptools})")


def build(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The sdist and the wheel built from a copy of the checkout (so no build output lands in it), and a second
    wheel built from the unpacked sdist, as `python -m build` and `pip install robusthyper-*.tar.gz` do."""
    src, dist = tmp_path / "src", tmp_path / "dist"
    shutil.copytree(ROOT, src, ignore=_not_source, symlinks=True)
    backend = "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))"
    sdist = dist / run([sys.executable, "-c", backend, dist], cwd=src).strip().splitlines()[-1]
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    run([*pip_wheel, "-w", dist, src], cwd=tmp_path)
    (wheel,) = dist.glob("*.whl")
    with tarfile.open(sdist) as tar:  # the "data" filter where this Python has it (3.10.12 on)
        tar.extractall(tmp_path / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    run([*pip_wheel, "-w", tmp_path / "from-sdist", tmp_path / "unpacked" / sdist.name.removesuffix(".tar.gz")],
        cwd=tmp_path)  # fmt: skip
    (wheel_from_sdist,) = (tmp_path / "from-sdist").glob("*.whl")
    return sdist, wheel, wheel_from_sdist


def fresh_venv(tmp_path: Path) -> Path:
    """A venv whose only robusthyper is the one installed into it later; its other imports (torch, pip, ...)
    resolve to this environment's installed packages through links, so nothing is downloaded."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).strip())
    deps = tmp_path / "deps"
    deps.mkdir()
    for lib in dict.fromkeys(Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")):
        for entry in lib.iterdir():
            own = entry.name.startswith(("robusthyper", "__editable__")) or entry.suffix == ".pth"
            if not own and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    (site / "_test_release_deps.pth").write_text(f"{deps}\n")
    return venv


def test_the_wheel_and_sdist_carry_the_data_and_the_installed_wheel_runs_outside_a_checkout(
    tmp_path: Path, record_property
) -> None:
    check_build_tools()
    started = time.perf_counter()
    sdist, wheel, wheel_from_sdist = build(tmp_path)

    # Contents: everything, compared against the repository's folders (a new recipe is covered by itself).
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(f"robusthyper-{VERSION}.dist-info/METADATA").decode()
    missing = expected_in_wheel() - set(names)
    assert not missing, f"the wheel lacks {sorted(missing)}"
    assert f"robusthyper-{VERSION}.dist-info/licenses/LICENSE" in names
    assert f"\nVersion: {VERSION}\n" in metadata and wheel.name.startswith(f"robusthyper-{VERSION}-")
    assert "robusthyper/report/templates/report.html.j2" in names
    assert not [n for n in names if n.startswith(("defenses/", "attacks/", "tests/"))], "data outside the package"
    with zipfile.ZipFile(wheel_from_sdist) as zf:
        assert sorted(zf.namelist()) == sorted(names), "a wheel built from the sdist differs from `pip wheel .`"
    with tarfile.open(sdist) as tar:
        prefix = f"robusthyper-{VERSION}/"
        in_sdist = {m.name.removeprefix(prefix) for m in tar.getmembers() if m.isfile()}
    missing = expected_in_sdist() - in_sdist
    assert not missing, f"the sdist lacks {sorted(missing)}"

    size = wheel.stat().st_size
    summary = f"wheel {wheel.name}: {len(names)} files, {size / 1024:.0f} KiB ({size} bytes); built in " \
              f"{time.perf_counter() - started:.1f} s"  # fmt: skip
    print(summary)
    record_property("summary", summary)

    # Install the wheel alone into a fresh venv, then work from a folder outside the checkout, as a user would.
    venv = fresh_venv(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("ROBUSTHYPER_")}  # fmt: skip
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=tmp_path, env=env)
    user = tmp_path / "user"
    user.mkdir()
    assert not user.resolve().is_relative_to(ROOT)

    where = run([venv / "bin" / "python", "-c", "import robusthyper, robusthyper.settings as s; "
                 "print(robusthyper.__file__); print(s.builtin_dir('defenses')); print(s.builtin_dir('attacks'))"],
                cwd=user, env=env).split()  # fmt: skip
    assert all(Path(p).resolve().is_relative_to(venv.resolve()) for p in where), where
    cli = venv / "bin" / "robusthyper"
    assert run([cli, "--version"], cwd=user, env=env).strip() == f"robusthyper {VERSION}"

    common = ["--store", "store", "--device", "cpu", "--quiet"]
    run([cli, "train", "det", "--epochs", "1", *common], cwd=user, env=env)
    (checkpoint,) = (user / "store").glob("det/*/meta.json")
    assert json.loads(checkpoint.read_text())["versions"]["robusthyper"] == VERSION
    run([cli, "attack", "--model", "det", "--eps", "0.1", "--n", "16", "--run-id", "single", *common], cwd=user,
        env=env)  # fmt: skip
    run([cli, "sweep", "quick", "--model", "det", "--n", "16", "--out", "quick", *common], cwd=user, env=env)
    for out in (user / "reports" / "single", user / "quick"):
        meta = json.loads((out / "meta.json").read_text())
        assert meta["versions"]["robusthyper"] == VERSION
        assert meta["git"]["commit"] is None, "an installed copy reported a git commit"
        assert (out / "results.csv").is_file()
        cell = next((out / "cells").glob("*.parquet"))
        assert json.loads(pq.read_schema(cell).metadata[CELL_META_KEY])["robusthyper"] == VERSION
    assert (user / "quick" / "index.html").is_file()
    assert not (user / "defenses").exists() and not (user / "attacks").exists()

    elapsed = f"release test: {time.perf_counter() - started:.1f} s in all"
    print(elapsed)
    record_property("summary", elapsed)
