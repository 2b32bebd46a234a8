"""Tests of `robusthyper attack` through typer's CliRunner: a run writes a report and prints a table; every
bad input of issue 4 ends in one line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe
from typer.testing import CliRunner

from robusthyper import store
from robusthyper.cli import app
from robusthyper.train import fit

FAST = ["--n", "24", "--batch-size", "24", "--steps", "2", "--k-attack", "2", "--k-eval", "4", "--quiet"]


@pytest.fixture(scope="module")
def model_store(tmp_path_factory, small_mnist) -> Path:
    root = tmp_path_factory.mktemp("store")
    for kind in ("det", "mcd"):
        recipe = tiny_recipe(kind, epochs=2, val_fraction=0.0).model_copy(update={"name": f"tiny-{kind}"})
        result = fit(recipe, small_mnist, progress=False)
        store.save(result.posterior, recipe, result.metrics, root)
    return root


def _invoke(args: list[str]):
    return CliRunner().invoke(app, ["attack", *args])


def test_attack_writes_a_report(model_store, tmp_path) -> None:
    out = tmp_path / "reports"
    result = _invoke(["--model", "tiny-det", "--model", "tiny-mcd", "--eps", "0", "--eps", "8/255",
                      "--attack", "pgd", "--attack", "fgsm", "--store", str(model_store), "--out", str(out),
                      "--run-id", "r1", "--device", "cpu", *FAST])  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = out / "r1"
    assert (folder / "results.csv").is_file() and (folder / "meta.json").is_file()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["device"] == "cpu" and meta["n"] == 24 and len(meta["specs"]) == 4
    assert [m["name"] for m in meta["models"]] == ["tiny-det", "tiny-mcd"]
    import pandas as pd

    frame = pd.read_csv(folder / "results.csv")
    assert set(frame["attack"]) == {"pgd-2", "fgsm", "worst-case"}
    assert frame["eps"].max() == pytest.approx(8 / 255)
    assert "wrote" in result.output


def test_attack_prints_a_table(model_store, tmp_path) -> None:
    args = ["--model", "tiny-det", "--eps", "0.1", "--store", str(model_store), "--out", str(tmp_path),
            "--n", "16", "--steps", "2", "--k-eval", "2"]  # fmt: skip
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    assert "robust_acc" in result.output and "tiny-det" in result.output and "pgd-2" in result.output


def test_attack_accepts_a_preset_and_a_factory(model_store, tmp_path, monkeypatch) -> None:
    (tmp_path / "my_nets.py").write_text(
        "from torch import nn\n"
        "def net():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Dropout(0.3)).train()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    preset = tmp_path / "mine.toml"
    preset.write_text('attack = "fgsm"\nnorm = "l2"\neps = [0.5, 1.0]\nk_eval = 3\n')
    result = _invoke(["--model", "my_nets:net", "--attack", str(preset), "--out", str(tmp_path / "r"),
                      "--run-id", "f", "--n", "16", "--k-attack", "2", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "r" / "f" / "meta.json").read_text())
    assert meta["models"][0]["factory"] == "my_nets:net"
    assert [s["eps"] for s in meta["specs"]] == [0.5, 1.0] and meta["specs"][0]["norm"] == "l2"


BAD = [
    (["--eps", "-0.1"], "negative"),
    (["--eps", "1.5"], "> 1 for the Linf norm"),
    (["--eps", "8/0"], "divides by zero"),
    (["--eps", "abc"], "not a number"),
    (["--eps", "0.1", "--steps", "0"], "steps"),
    (["--eps", "0.1", "--k-attack", "0"], "k_attack"),
    (["--eps", "0.1", "--k-eval", "0"], "k_eval"),
    (["--eps", "0.1", "--attack", "deepfool"], "unknown attack 'deepfool'"),
    (["--eps", "0.1", "--norm", "l7"], "unknown norm 'l7'"),
    (["--eps", "0.1", "--eot", "median"], "unknown eot"),
    (["--eps", "0.1", "--n", "100000"], "larger than the mnist5k test set"),
    (["--eps", "0.1", "--n", "0"], "--n 0"),
    (["--attack", "pgd"], "no eps"),
]


@pytest.mark.parametrize(("extra", "fragment"), BAD)
def test_bad_input_one_line_exit_2_nothing_written(model_store, tmp_path, extra, fragment) -> None:
    out = tmp_path / "reports"
    result = _invoke(["--model", "tiny-det", "--store", str(model_store), "--out", str(out), "--device", "cpu",
                      *extra])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.output
    assert not out.exists()


def test_missing_checkpoint_says_how_to_train(model_store, tmp_path) -> None:
    out = tmp_path / "reports"
    result = _invoke(["--model", "bbb", "--eps", "0.1", "--store", str(model_store), "--out", str(out)])
    assert result.exit_code == 2
    assert "robusthyper train bbb" in result.output and "\n" not in result.output.strip()
    assert not out.exists()


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [("no_such_mod_abc:make", "cannot import"), ("bad_factories:wrong", "returned str"),
     ("bad_factories:missing", "no callable")],
)  # fmt: skip
def test_bad_factories(tmp_path, monkeypatch, factory, fragment) -> None:
    (tmp_path / "bad_factories.py").write_text("def wrong():\n    return 'a string'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "reports"
    result = _invoke(["--model", factory, "--eps", "0.1", "--out", str(out)])
    assert result.exit_code == 2 and fragment in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(model_store, tmp_path) -> None:
    out = tmp_path / "reports"
    result = _invoke(["--model", "tiny-det", "--eps", "0.1", "--device", "cuda", "--store", str(model_store),
                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2 and "no CUDA device" in result.output
    assert not out.exists()


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["attack", "--help"])
    assert result.exit_code == 0
    for option in ("--model", "--attack", "--eps", "--k-attack", "--k-eval", "--eot", "--n", "--seed"):
        assert option in result.output


def test_several_k_attack_and_eot_in_one_table(model_store, tmp_path) -> None:
    out = tmp_path / "reports"
    result = _invoke(["--model", "tiny-mcd", "--eps", "0.1", "--k-attack", "1", "--k-attack", "3",
                      "--eot", "bma", "--eot", "mean-loss", "--store", str(model_store), "--out", str(out),
                      "--run-id", "k", "--n", "16", "--steps", "2", "--k-eval", "2", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    import pandas as pd

    frame = pd.read_csv(out / "k" / "results.csv")
    cells = set(map(tuple, frame[["k_attack", "eot"]].drop_duplicates().to_numpy().tolist()))
    assert cells == {(1, "bma"), (3, "bma"), (1, "mean-loss"), (3, "mean-loss")}
    assert "worst-case" not in set(frame["attack"])  # one attack at several settings is not a suite


def test_train_flag_trains_a_missing_recipe(tmp_path, monkeypatch) -> None:
    (tmp_path / "defenses").mkdir()
    (tmp_path / "defenses" / "tiny-train.toml").write_text(
        'dataset = "mnist5k"\n[net]\narch = "mlp"\nwidths = [16]\n[posterior]\nkind = "det"\n'
        "[train]\nepochs = 1\neval_samples = 1\nval_fraction = 0.0\n"
    )
    monkeypatch.chdir(tmp_path)
    args = ["--model", "tiny-train", "--eps", "0.1", "--store", "models", "--out", "reports", "--n", "16",
            "--steps", "2", "--k-eval", "2", "--quiet"]  # fmt: skip
    missing = _invoke(args)
    assert missing.exit_code == 2 and "robusthyper train tiny-train" in missing.output
    result = _invoke([*args, "--train"])
    assert result.exit_code == 0, result.output
    assert any((tmp_path / "models" / "tiny-train").iterdir()) and any((tmp_path / "reports").iterdir())


def test_existing_run_id_fails_before_the_run(model_store, tmp_path) -> None:
    (tmp_path / "reports" / "taken").mkdir(parents=True)
    result = _invoke(["--model", "tiny-det", "--eps", "0.1", "--store", str(model_store), "--out",
                      str(tmp_path / "reports"), "--run-id", "taken", *FAST])  # fmt: skip
    assert result.exit_code == 2 and "already exists" in result.output
    assert list((tmp_path / "reports" / "taken").iterdir()) == []


def test_an_interrupted_attack_resumes_with_the_same_run_id(model_store, tmp_path, monkeypatch) -> None:
    """A killed attack leaves its finished cells (and no results); the same --run-id resumes from them."""
    from robusthyper import compute

    args = ["--model", "tiny-mcd", "--eps", "0.05", "--eps", "0.1", "--attack", "fgsm", "--store", str(model_store),
            "--out", str(tmp_path), "--run-id", "r", "--device", "cpu", *FAST]  # fmt: skip
    original = compute.attack_cell
    calls = {"n": 0}

    def dies_on_the_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(compute, "attack_cell", dies_on_the_second)
    killed = _invoke(args)
    assert killed.exit_code == 130 and not (tmp_path / "r" / "meta.json").exists()
    monkeypatch.setattr(compute, "attack_cell", original)
    resumed = _invoke(args)
    assert resumed.exit_code == 0, resumed.output
    cells = json.loads((tmp_path / "r" / "meta.json").read_text())["cells"]
    assert (cells["computed"], cells["reused"]) == (1, 2)  # the probe and the first attack were recorded
    assert "already exists" in _invoke(args).output  # a finished run is never overwritten


# ---------------------------------------------------------------- sanity flags (flags.csv, meta.json, output)

MASKED_NETS = '''
"""Factories for `--model masked_nets:NAME`: the tiny det net of the test store behind test_sanity's planted
masking (input quantisation plus a one-pixel leak), and fully masked (quantisation alone)."""
import torch
from torch import nn
from test_sanity import MaskedNet

from robusthyper import store
from robusthyper.loading import ModulePosterior

STORE = {store!r}


class FullyMasked(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


def planted():
    return ModulePosterior(MaskedNet(store.load("tiny-det", STORE).posterior.net), stochastic=False)


def fully_masked():
    return ModulePosterior(FullyMasked(store.load("tiny-det", STORE).posterior.net), stochastic=False)
'''


@pytest.fixture
def masked_nets(model_store, tmp_path, monkeypatch) -> None:
    (tmp_path / "masked_nets.py").write_text(MASKED_NETS.format(store=str(model_store)))
    monkeypatch.syspath_prepend(str(tmp_path))


def test_attack_writes_its_sanity_flags(model_store, tmp_path) -> None:
    from robusthyper.run.schema import FLAGS_CSV
    from robusthyper.sanity import FLAG_COLUMNS

    result = _invoke(["--model", "tiny-det", "--eps", "0.1", "--store", str(model_store), "--out",
                      str(tmp_path), "--run-id", "clean", "--device", "cpu", *FAST])  # fmt: skip
    assert result.exit_code == 0, result.output
    import pandas as pd

    flags = pd.read_csv(tmp_path / "clean" / FLAGS_CSV)
    assert tuple(flags.columns) == FLAG_COLUMNS
    meta = json.loads((tmp_path / "clean" / "meta.json").read_text())
    assert meta["flags"] == len(flags) and len(meta["warnings"]) == len(flags)
    assert meta["gradient_health"]["tiny-det"]["grad_zero_fraction"] < 0.5


def test_attack_flags_the_planted_masking_model(model_store, masked_nets, tmp_path) -> None:
    import pandas as pd

    from robusthyper.run.schema import FLAGS_CSV

    result = _invoke(["--model", "tiny-det", "--model", "masked_nets:planted", "--attack", "fgsm",
                      "--attack", "square", "--eps", "0.3", "--steps", "40", "--k-eval", "1", "--n", "48",
                      "--batch-size", "48", "--store", str(model_store), "--out", str(tmp_path), "--run-id",
                      "planted", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    flags = pd.read_csv(tmp_path / "planted" / FLAGS_CSV)
    assert set(flags["model"]) == {"planted"}, flags
    assert {"zero-gradients", "square-stronger"} <= set(flags["code"])
    meta = json.loads((tmp_path / "planted" / "meta.json").read_text())
    assert meta["warnings"] == [
        f"[{r.severity}] {r.code}: {r.model} {r.attack} eps={r.eps:g}: {r.message}"
        for r in flags.itertuples()
    ]
    # One line per flag, after the results table, before the closing line.
    lines = result.output.splitlines()
    table_end = max(
        i for i, line in enumerate(lines) if "robust_acc" in line or "planted" in line and "│" in line
    )
    flag_lines = [i for i, line in enumerate(lines) if line.startswith("[error] ")]
    assert len(flag_lines) == len(flags) and min(flag_lines) > table_end
    assert lines[-1].startswith("wrote ")


def test_attack_evaluates_a_fully_masked_model_and_flags_it(
    model_store, masked_nets, tmp_path, caplog
) -> None:
    """No hard stop on a fully masked model: results, a warning line and the zero-gradients flag."""
    import pandas as pd

    from robusthyper.run.schema import FLAGS_CSV

    result = _invoke(["--model", "masked_nets:fully_masked", "--eps", "0.1", "--out", str(tmp_path),
                      "--run-id", "masked", "--device", "cpu", *FAST])  # fmt: skip
    assert result.exit_code == 0, result.output
    warned = [
        r.getMessage() for r in caplog.records if "exactly zero on all 24 probe examples" in r.getMessage()
    ]
    assert len(warned) == 1 and warned[0].startswith("fully_masked: ")
    frame = pd.read_csv(tmp_path / "masked" / "results.csv")
    robust = frame.query("metric == 'accuracy' and input == 'adversarial'")["value"]
    clean = frame.query("metric == 'accuracy' and input == 'clean'")["value"]
    assert robust.tolist() == clean.tolist()  # gradient attacks cannot move it: "perfectly robust"
    flags = pd.read_csv(tmp_path / "masked" / FLAGS_CSV)
    zero = flags[flags["code"] == "zero-gradients"]
    assert list(zero["model"]) == ["fully_masked"] and "100.0%" in zero["message"].iloc[0]
    assert any(line.startswith("[error] zero-gradients: fully_masked") for line in result.output.splitlines())
