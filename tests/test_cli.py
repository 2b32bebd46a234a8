"""The command line: help, the train/models/data commands, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robusthyper.cli import app

runner = CliRunner()

TINY = """
dataset = "{dataset}"
[net]
arch = "mlp"
widths = [16]
[posterior]
kind = "mcd"
[train]
epochs = 1
eval_samples = 2
val_fraction = 0.0
"""


def tiny_recipe_file(tmp_path: Path, dataset: str = "mnist5k") -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(dataset=dataset))
    return str(path)


def run(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_help_lists_commands_and_every_option_is_explained() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("train", "models", "data"):
        assert command in result.output
    train_help = run("train", "--help").output
    for option in ("--store", "--data-dir", "--download", "--device", "--epochs", "--seed", "--quiet"):
        assert option in train_help


def test_version_prints_the_one_version() -> None:
    import robusthyper

    result = run("--version")
    assert result.exit_code == 0 and result.output == f"robusthyper {robusthyper.__version__}\n"


def test_cli_module_does_not_import_torch() -> None:
    """`--help` must stay instant: torch and ART are imported inside the commands only."""
    code = "import sys, robusthyper.cli; print('torch' in sys.modules, 'art' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_python_m_help_imports_no_heavy_module() -> None:
    """`python -m robusthyper --help` (robusthyper/__main__.py, like the `robusthyper` entry point
    robusthyper.cli:main) lists every command and imports neither torch, ART nor pandas: one module per
    command in robusthyper/cli/, each importing its heavy dependencies inside the command."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "robusthyper", "--help"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    for command in ("train", "models", "data", "attack", "report", "gate", "sweep"):
        assert command in result.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line
    }
    assert not imported & {"torch", "art", "pandas", "numpy", "matplotlib"}, imported & {
        "torch",
        "art",
        "pandas",
    }


def test_train_then_models(tmp_path) -> None:
    store = tmp_path / "store"
    result = run("train", tiny_recipe_file(tmp_path), "--store", str(store), "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "tiny: test accuracy" in result.output
    listed = run("models", "--store", str(store))
    assert listed.exit_code == 0 and "tiny" in listed.output and "mcd" in listed.output


def test_models_on_an_empty_store(tmp_path) -> None:
    result = run("models", "--store", str(tmp_path))
    assert result.exit_code == 0 and "no checkpoints" in result.output


def test_data_list_shows_the_builtin_dataset(tmp_path) -> None:
    result = run("data", "list", "--data-dir", str(tmp_path))
    assert result.exit_code == 0
    row = next(line for line in result.output.splitlines() if "mnist5k" in line)
    assert "yes" in row
    assert "cifar10" in result.output


def test_unknown_recipe(tmp_path) -> None:
    assert_one_line_error(run("train", "nope", "--store", str(tmp_path)), "unknown recipe 'nope'")


def test_recipe_with_an_unknown_key(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TINY.format(dataset="mnist5k") + "lr_typo = 1\n")
    assert_one_line_error(run("train", str(path), "--store", str(tmp_path)), "unknown key 'train.lr_typo'")


def test_unknown_dataset(tmp_path) -> None:
    result = run("train", tiny_recipe_file(tmp_path, "imagenet"), "--store", str(tmp_path / "s"))
    assert_one_line_error(result, "imagenet")
    assert not (tmp_path / "s" / "tiny").exists() or not any((tmp_path / "s" / "tiny").iterdir())


def test_missing_dataset_says_how_to_get_it(tmp_path) -> None:
    result = run("train", tiny_recipe_file(tmp_path, "mnist"), "--store", str(tmp_path / "s"),
                 "--data-dir", str(tmp_path / "empty"))  # fmt: skip
    assert_one_line_error(result, "MNIST not found", "--data-dir", "--download")
    assert not list((tmp_path / "s").rglob("*.safetensors"))


def test_non_writable_store(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(run("train", tiny_recipe_file(tmp_path), "--store", str(blocker)), "not writable")


def test_cuda_without_cuda(tmp_path) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run("train", tiny_recipe_file(tmp_path), "--store", str(tmp_path), "--device", "cuda")
    assert_one_line_error(result, "--device cuda")


def test_models_lists_a_corrupt_checkpoint_without_failing(tmp_path) -> None:
    bad = tmp_path / "det" / "20260101T000000000000Z"
    bad.mkdir(parents=True)
    (bad / "meta.json").write_text("{broken")
    result = run("models", "--store", str(tmp_path))
    assert result.exit_code == 0 and "corrupt" in result.output
