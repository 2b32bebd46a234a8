"""Smoke tests of the benchmark scripts: each runs at a tiny size and writes valid JSON. Not timed tests: the
figures themselves are only checked for being present and positive."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_eot_pgd_writes_a_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torchattacks")
    out = tmp_path / "eot.json"
    _script("eot_pgd").main(
        ["--quick", "--models", "det", "mcd", "--n", "8", "--batch", "4", "--store", str(tmp_path / "none"),
         "--json", str(out)]
    )  # fmt: skip
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"det", "mcd"}
    assert data["matmul_peak_gflops"]["used"] > 0
    for res in data["results"].values():
        assert res["flops_per_image_step_sample"] > 0
        assert set(res["methods"]) == {"rh-bma", "rh-mean-loss", "torchattacks", "art-loop"}
        for row in res["methods"].values():
            assert row["isps"] > 0 and 0.0 <= row["robust_accuracy"] <= 1.0
    assert data["results"]["mcd"]["k"] == 4 and data["results"]["det"]["k"] == 1
    assert "img·step·sample/s" in capsys.readouterr().out


def test_memory_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    _script("memory").main(["--quick", "--phase", "eval", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert {(r["k"], r["chunked"]) for r in rows} == {(1, True), (1, False), (8, True), (8, False)}
    assert all("error" not in r and r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0 for r in rows)


def test_train_epoch_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    _script("train_epoch").main(["--quick", "--n-train", "64", "--recipes", "det", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["ratio_to_det"] == {"det": 1.0} and data["train_samples"] == {"det": 1}
    assert data["epoch_seconds"]["det"] > 0 and data["help_seconds"] > 0


def test_scale_out_writes_json(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="ray is not installed (pip install 'robusthyper[ray]')")
    out = tmp_path / "scale.json"
    _script("scale_out").main(["--quick", "--n", "8", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["cells"] == 6 and set(data["cells_per_minute"]) == {"in-process", "ray-1", "ray-2"}
    assert all(value > 0 for value in data["cells_per_minute"].values())
