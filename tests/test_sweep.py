"""Tests of robusthyper.sweep and `robusthyper sweep`: a killed sweep resumes to the same table as an
uninterrupted one (recomputing only the missing cells), changed settings never reuse stale cells, the table
equals `evaluate.run`'s, OOD AUROC rows, the suites, and every bad input ends in one line, exit code 2 and
nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import tiny_recipe
from typer.testing import CliRunner

from robusthyper import compute, sanity, store, sweep
from robusthyper.attacks import make_spec
from robusthyper.cli import app
from robusthyper.errors import ConfigError, UserError
from robusthyper.evaluate import run
from robusthyper.loading import ModelUnderTest
from robusthyper.metrics import auroc
from robusthyper.run import read_run
from robusthyper.run.schema import CELLS, FLAGS_CSV, META, OOD, RESULTS_CSV, SCHEMA_VERSION
from robusthyper.train import fit

N, BATCH = 24, 12
FAST = {"k_attack": 2, "k_eval": 4}
SPECS = [make_spec(attack="fgsm", eps=e, **FAST) for e in (0.0, 0.1)] + [
    make_spec(attack="pgd", eps=0.1, steps=2, **FAST)
]
MODELS = ["tiny-det", "tiny-mcd"]


@pytest.fixture(scope="module")
def model_store(tmp_path_factory, mnist5k) -> Path:
    """Two small MLPs. The MC-dropout one is trained enough (2,000 digits, 3 epochs, ~85% accuracy) to be
    less sure of noise than of digits; after 600 digits it is not yet (its AUROC on noise is below 0.5)."""
    from robusthyper.data import Dataset, Split

    root = tmp_path_factory.mktemp("store")
    for kind, count, epochs in (("det", 600, 2), ("mcd", 2000, 3)):
        data = Dataset(mnist5k.info, Split(mnist5k.train.x[:count], mnist5k.train.y[:count]),
                       Split(mnist5k.test.x[:200], mnist5k.test.y[:200]), None, mnist5k.source)  # fmt: skip
        recipe = tiny_recipe(kind, epochs=epochs, val_fraction=0.0).model_copy(
            update={"name": f"tiny-{kind}"}
        )
        result = fit(recipe, data, progress=False)
        store.save(result.posterior, recipe, result.metrics, root)
    return root


@pytest.fixture(scope="module")
def whole(model_store, tmp_path_factory) -> sweep.SweepResult:
    """An uninterrupted sweep of both models under SPECS."""
    return _sweep(tmp_path_factory.mktemp("whole") / "run", model_store)


def _sweep(run_dir: Path, model_store: Path, specs=SPECS, models=MODELS, **kwargs) -> sweep.SweepResult:
    options = {"n": N, "batch_size": BATCH, "progress": False, "ood": False, "report": False, **kwargs}
    return sweep.run_sweep(run_dir, models, specs, store=model_store, **options)


def _timeless(frame: pd.DataFrame) -> pd.DataFrame:
    """The table without wall-clock seconds (the only figures that differ between runs)."""
    return frame[frame["metric"] != "seconds"].reset_index(drop=True)


def _cells(run_dir: Path) -> list[Path]:
    return sorted((run_dir / CELLS).glob("*.parquet"))


# ---------------------------------------------------------------- resume


def test_killed_sweep_resumes_to_the_same_table(model_store, whole, tmp_path, monkeypatch) -> None:
    assert (whole.computed, whole.reused) == (8, 0)  # 2 models x (3 attacks + the gradient probe)

    calls = {"n": 0}
    original = compute.attack_cell

    def dies_on_the_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(compute, "attack_cell", dies_on_the_third)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        _sweep(killed, model_store)
    assert len(_cells(killed)) == 3  # the first model's probe and two attacks
    assert not (killed / RESULTS_CSV).exists() and not (killed / META).exists()
    assert not list((killed / CELLS).glob(".*"))  # no half-written cell
    monkeypatch.setattr(compute, "attack_cell", original)

    resumed = _sweep(killed, model_store)
    assert (resumed.computed, resumed.reused) == (5, 3)
    pd.testing.assert_frame_equal(_timeless(resumed.results), _timeless(whole.results))
    pd.testing.assert_frame_equal(resumed.examples, whole.examples)
    pd.testing.assert_frame_equal(_timeless(read_run(killed).results), _timeless(read_run(whole.run_dir).results))

    again = _sweep(killed, model_store)
    assert (again.computed, again.reused) == (0, 8)
    meta = json.loads((killed / META).read_text())
    assert meta["schema_version"] == SCHEMA_VERSION and meta["cells"]["reused"] == 8


def test_sweep_table_equals_evaluate_run(model_store, whole) -> None:
    """Cell by cell with a shared clean evaluation, and the worst case rebuilt from recorded examples: the
    same numbers as one `evaluate.run` over all specs."""
    done = whole
    models = []
    for name in MODELS:
        ckpt = store.load(name, model_store)
        models.append(ModelUnderTest(name, ckpt.posterior, str(ckpt.path), ckpt.meta["posterior"]))
    from robusthyper.data import load_dataset

    direct = run(models, SPECS, load_dataset("mnist5k").test, dataset="mnist5k", n=N, batch_size=BATCH,
                 progress=False)  # fmt: skip
    assert "worst-case" in set(done.results["attack"])
    pd.testing.assert_frame_equal(_timeless(done.results), _timeless(direct.results), check_dtype=False)
    pd.testing.assert_frame_equal(done.examples, direct.examples, check_dtype=False)
    assert {"clean_confidence", "adv_confidence"} <= set(done.examples.columns)
    assert done.examples["clean_confidence"].between(0.1, 1).all()


def test_sweep_writes_sanity_flags_and_their_warnings(model_store, whole, tmp_path, monkeypatch) -> None:
    from robusthyper.sanity import FLAG_COLUMNS

    flags = pd.read_csv(whole.run_dir / FLAGS_CSV)
    assert tuple(flags.columns) == FLAG_COLUMNS  # headers even when the bill is clean
    meta = json.loads((whole.run_dir / META).read_text())
    assert meta["flags"] == len(flags) and meta["warnings"] == whole.warnings
    assert [m for m in flags["message"] if not any(m in w for w in meta["warnings"])] == []
    assert set(meta["gradient_health"]) == set(MODELS)
    assert meta["gradient_health"]["tiny-mcd"]["grad_zero_fraction"] < 0.5

    # A model whose input gradients are masked: the zero-gradient flag fires, in flags.csv and the warnings.
    masked = {
        "grad_zero_fraction": 0.9,
        "grad_nan_fraction": 0.0,
        "grad_inf_fraction": 0.0,
        "grad_abs_mean": 0.0,
    }
    monkeypatch.setattr(sanity, "gradient_health", lambda *a, **k: dict(masked))
    again = _sweep(tmp_path / "masked", model_store, models=["tiny-mcd"])
    flags = pd.read_csv(again.run_dir / FLAGS_CSV)
    zero = flags[flags["code"] == "zero-gradients"]
    assert list(zero["model"]) == ["tiny-mcd"] and list(zero["severity"]) == ["error"]
    assert any("zero-gradients" in w and "tiny-mcd" in w for w in again.warnings)
    assert json.loads((again.run_dir / META).read_text())["warnings"] == again.warnings


FLAT_NETS = """
import torch
from torch import nn


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.linspace(-1, 1, 10))

    def forward(self, x):
        return self.bias.expand(x.shape[0], 10) + 0 * x.flatten(1)[:, :10]


def flat():
    return Flat()
"""


def test_a_fully_masked_model_is_swept_and_flagged(tmp_path, monkeypatch, caplog) -> None:
    """No hard stop: every cell is computed, the zero-gradients flag recorded, and one warning line (from
    the sweep's gradient probe, not one per cell)."""
    (tmp_path / "flat_nets.py").write_text(FLAT_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level("WARNING"):
        done = _sweep(tmp_path / "run", None, specs=SPECS, models=["flat_nets:flat"])
    assert (done.computed, done.reused) == (4, 0)  # three attacks (one sample: no EOT variants) + the probe
    robust = done.results.query("metric == 'accuracy' and input == 'adversarial' and attack == 'pgd-2'")
    assert len(robust) == 1 and robust["value"].notna().all()
    flags = pd.read_csv(done.run_dir / FLAGS_CSV)
    assert list(flags.loc[flags["code"] == "zero-gradients", "model"]) == ["flat"]
    assert any(w.startswith("[error] zero-gradients: flat") for w in done.warnings)
    probe = [r for r in caplog.records if "exactly zero on all" in r.getMessage()]
    assert len(probe) == 1 and probe[0].getMessage().startswith("flat: ")


def test_a_run_folder_held_by_a_live_driver_is_refused(model_store, tmp_path) -> None:
    """One driver per run folder: a lock naming a live process stops a second driver before any work; a lock
    left by a dead one (kill -9) is taken over; a finished sweep leaves no lock."""
    import os
    import socket
    import subprocess
    import sys

    from robusthyper.pipeline.lock import LOCK

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / LOCK).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                "command": "sweep", "since": "2026-12-06T09:00:00+00:00"}))  # fmt: skip
        with pytest.raises(UserError, match=f"being written by pid {holder.pid} on host") as err:
            _sweep(run_dir, model_store, models=["tiny-mcd"])
        assert "\n" not in str(err.value) and not (run_dir / CELLS).exists()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert (run_dir / LOCK).exists()  # the refused driver leaves the holder's lock alone
    done = _sweep(run_dir, model_store, models=["tiny-mcd"])  # the holder is gone: a stale lock
    assert done.computed == 4 and not (run_dir / LOCK).exists()
    assert os.getpid() != holder.pid


SLOW_NETS = """
import time

from flat_nets import Flat


def slow():
    time.sleep(20)  # holds the run folder's lock while 'loading', so that a second driver meets it
    return Flat()
"""


def test_two_drivers_on_one_folder(tmp_path) -> None:
    """Two real `robusthyper sweep` processes on one --out folder: the second stops with one line naming the
    first; the first computes every cell once."""
    import os
    import subprocess
    import sys
    import time

    from robusthyper.pipeline.lock import LOCK

    (tmp_path / "flat_nets.py").write_text(FLAT_NETS)
    (tmp_path / "slow_nets.py").write_text(SLOW_NETS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    suite = tmp_path / "tiny.toml"
    suite.write_text('n = 8\n[[attacks]]\nattack = "fgsm"\neps = [0.1]\nk_eval = 1\n')
    args = [sys.executable, "-m", "robusthyper", "sweep", str(suite), "--model", "slow_nets:slow", "--out",
            str(tmp_path / "run"), "--device", "cpu", "--no-ood", "--quiet"]  # fmt: skip
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "run" / LOCK).exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first driver never took the lock"
            time.sleep(0.1)
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"being written by pid {first.pid} on host" in lines[0]
        out, _ = first.communicate(timeout=180)
    finally:
        first.kill()
    assert first.returncode == 0, out
    meta = json.loads((tmp_path / "run" / META).read_text())
    assert meta["cells"]["computed"] == meta["cells"]["total"] == 2  # the probe and FGSM, once each
    assert not (tmp_path / "run" / LOCK).exists()


def test_changed_settings_do_not_reuse_stale_cells(model_store, tmp_path) -> None:
    run_dir = tmp_path / "run"
    one = {"models": ["tiny-mcd"]}
    assert _sweep(run_dir, model_store, **one).computed == 4
    fewer = _sweep(run_dir, model_store, n=16, **one)  # another n: every cell differs
    assert (fewer.computed, fewer.reused) == (4, 0)
    assert set(fewer.results["n"]) == {16}
    other_keval = SPECS[:2] + [make_spec(attack="pgd", eps=0.1, steps=2, k_attack=2, k_eval=5)]
    changed = _sweep(run_dir, model_store, specs=other_keval, **one)
    assert (changed.computed, changed.reused) == (1, 3)
    assert _sweep(run_dir, model_store, batch_size=8, **one).reused == 0  # batches draw their own samples
    both = _sweep(run_dir, model_store)  # another model joins; the first settings' cells are still there
    assert (both.computed, both.reused) == (4, 4)
    assert set(both.results["n"]) == {N} and set(both.results["model"]) == set(MODELS)


def test_eot_study_runs_once_for_a_deterministic_model(model_store, tmp_path) -> None:
    """A deterministic net has one sample: K_attack 1, 2 and 4 are one cell for it, three for MC dropout;
    the per-example table records K_attack, so the study's rows stay apart."""
    study = [make_spec(attack="pgd", eps=0.1, steps=2, k_attack=k, k_eval=4) for k in (1, 2, 4)]
    done = _sweep(tmp_path / "run", model_store, specs=study)
    assert done.computed == 1 + 3 + 2  # and one gradient probe per model
    adv = done.results[(done.results["metric"] == "accuracy") & (done.results["input"] == "adversarial")]
    assert sorted(adv[adv["model"] == "tiny-det"]["k_attack"]) == [1]
    assert sorted(adv[adv["model"] == "tiny-mcd"]["k_attack"].astype(int)) == [1, 2, 4]
    examples = done.examples[done.examples["attack"] != "worst-case"]
    per_k = examples[examples["model"] == "tiny-mcd"].groupby("k_attack").size()
    assert per_k.to_dict() == {1: N, 2: N, 4: N}


def test_no_resume_and_overwrite(model_store, tmp_path) -> None:
    run_dir = tmp_path / "run"
    _sweep(run_dir, model_store, specs=SPECS[:1])
    with pytest.raises(UserError, match="already records 4 cell"):
        _sweep(run_dir, model_store, specs=SPECS[:1], resume=False)
    done = _sweep(run_dir, model_store, specs=SPECS[:1], resume=False, overwrite=True)
    assert (done.computed, done.reused) == (4, 0)


# ---------------------------------------------------------------- OOD


def test_ood_auroc_against_metrics_auroc(model_store, mnist5k) -> None:
    posterior = store.load("tiny-mcd", model_store).posterior
    x_in = mnist5k.test.x[:64]
    x_out = torch.rand((64, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    got = compute.ood_auroc(posterior, x_in, x_out, k_eval=8, seed=3, batch_size=32)
    assert got["entropy"] > 0.75  # a trained model is less sure of noise than of digits
    inside = compute.uncertainty_scores(posterior, x_in, k_eval=8, seed=3, batch_size=32)
    outside = compute.uncertainty_scores(posterior, x_out, k_eval=8, seed=3, batch_size=32)
    assert got["entropy"] == auroc(inside["entropy"], outside["entropy"])
    assert got["mi"] == auroc(inside["mi"], outside["mi"])
    # The scores are the model average's entropy and MI over K_eval samples from the evaluation generators.
    from robusthyper.metrics import mutual_information, predictive_entropy

    logits = posterior.logits(x_out[:32], 8, compute.eval_generator(torch.device("cpu"), 3, 0))
    torch.testing.assert_close(outside["entropy"][:32], predictive_entropy(logits))
    torch.testing.assert_close(outside["mi"][:32], mutual_information(logits))
    # The same inputs on both sides: chance.
    assert compute.ood_auroc(posterior, x_in, x_in, k_eval=8, seed=3)["entropy"] == pytest.approx(0.5)


def test_sweep_records_ood_rows(model_store, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ROBUSTHYPER_DEBIAN_FASHION_DIR", str(tmp_path / "no-fashion"))
    done = sweep.run_sweep(tmp_path / "run", ["tiny-mcd"], SPECS[:1], store=model_store, data_dir=tmp_path,
                           n=N, progress=False, report=False)  # fmt: skip
    ood = done.results[done.results["attack"] == OOD]
    assert set(ood["input"]) == {sweep.UNIFORM_NOISE}
    assert set(ood["metric"]) == {"ood_auroc_entropy", "ood_auroc_mi", "ood_entropy", "ood_mi"}
    assert ood["eps"].isna().all() and (ood["n"] == N).all()
    aurocs = ood[ood["metric"].str.startswith("ood_auroc")]
    assert aurocs["value"].between(0, 1).all() and ood["k_eval"].eq(SPECS[0].k_eval).all()
    assert any("fashion-mnist skipped" in w for w in done.warnings)
    assert done.computed == 3  # the probe, one attack cell, one OOD cell


def test_ood_sets_per_dataset(tmp_path, monkeypatch) -> None:
    from robusthyper.data import Dataset, Split, dataset_info

    def split(n: int, shape: tuple[int, ...]) -> Split:
        return Split(torch.rand((n, *shape)), torch.zeros(n, dtype=torch.long))

    cifar5 = Dataset(dataset_info("cifar5"), split(8, (3, 32, 32)), split(8, (3, 32, 32)),
                     split(6, (3, 32, 32)), "fake")  # fmt: skip
    sets, notes = sweep.ood_sets("cifar5", cifar5, 4, 0, tmp_path)
    assert [(name, tuple(x.shape)) for name, x in sets.items()] == [
        (sweep.UNIFORM_NOISE, (4, 3, 32, 32)),
        ("cifar5-ood", (4, 3, 32, 32)),
    ] and notes == []
    noise = sets[sweep.UNIFORM_NOISE]
    assert 0 <= noise.min() and noise.max() <= 1
    torch.testing.assert_close(sets["cifar5-ood"], cifar5.ood.x[:4])
    monkeypatch.setenv("ROBUSTHYPER_DEBIAN_FASHION_DIR", str(tmp_path / "none"))
    mnist = Dataset(dataset_info("mnist5k"), split(8, (1, 28, 28)), split(8, (1, 28, 28)), None, "fake")
    sets, notes = sweep.ood_sets("mnist5k", mnist, 4, 0, tmp_path)
    assert list(sets) == [sweep.UNIFORM_NOISE] and "fashion-mnist skipped" in notes[0]


# ---------------------------------------------------------------- suites


def test_shipped_suites() -> None:
    # The strong core of each suite (the suites may add further checks: EOT studies, adaptive attacks, the
    # papers' protocols).
    standard = sweep.load_suite("standard")
    assert {s.attack for s in standard.specs} >= {"fgsm", "pgd", "apgd-ce", "apgd-dlr", "square"}
    strong = [s for s in standard.specs if s.protocol == "strong"]
    assert sorted({s.eps for s in strong}) == [0, 0.05, 0.1, 0.15, 0.2, 0.3]
    quick = sweep.load_suite("quick", {"seed": 7})
    assert quick.n == 200 and {s.seed for s in quick.specs} == {7}
    assert {s.label for s in quick.specs} >= {"fgsm", "pgd-20"}
    assert 10 in {s.k_attack for s in quick.specs if s.label == "pgd-20"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [('[[attacks]]\nattack = "fgsm"\neps = [0.1]\nstepz = 3\n', "stepz"),
     ('[[attacks]]\nattack = "fgsm"\neps = []\n', "eps list is empty"),
     ("attacks = []\n", "no [[attacks]]"),
     ('n = 0\n[[attacks]]\nattack = "fgsm"\neps = [0.1]\n', "n = 0"),
     ('colour = "red"\n[[attacks]]\nattack = "fgsm"\neps = [0.1]\n', "colour"),
     ("[[attacks]\n", "malformed TOML")],
)  # fmt: skip
def test_bad_suites(tmp_path, text, fragment) -> None:
    path = tmp_path / "suite.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        sweep.load_suite(str(path))
    assert fragment in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- the command line


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


@pytest.fixture()
def suite_file(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text('n = 16\n[[attacks]]\nattack = "fgsm"\neps = [0, 0.1]\nk_attack = 2\nk_eval = 3\n'
                    '[[attacks]]\nattack = "pgd"\nsteps = 2\neps = [0.1]\nk_attack = 2\nk_eval = 3\n')  # fmt: skip
    return path


def test_cli_sweep_writes_the_report_and_resumes(model_store, suite_file, tmp_path) -> None:
    out = tmp_path / "reports" / "tiny"
    args = ["sweep", str(suite_file), "--model", "tiny-det", "--model", "tiny-mcd", "--store", str(model_store),
            "--out", str(out), "--device", "cpu", "--no-ood", "--quiet"]  # fmt: skip
    first = _invoke(*args)
    assert first.exit_code == 0, first.output
    assert "8 cells computed, 0 reused" in first.output  # 2 models x (3 attacks + the probe)
    assert first.output.strip().splitlines()[-1] == str(out / "index.html")
    assert (out / "index.html").is_file() and (out / "results.parquet").is_file()
    meta = json.loads((out / META).read_text())
    assert meta["n"] == 16 and meta["command"] == "sweep" and meta["suite"] == str(suite_file)
    assert meta["schema_version"] == SCHEMA_VERSION
    text = (out / "index.html").read_text(encoding="utf-8")
    assert "Worst case over attacks" in text and "tiny-mcd" in text
    assert 'id="flags"' in text and "Not checked" not in text and (out / "flags.csv").is_file()
    second = _invoke(*args)
    assert second.exit_code == 0 and "0 cells computed, 8 reused" in second.output
    assert "already records 8 cell" in _one_line(_invoke(*args, "--no-resume"))


def test_report_shows_ood(model_store, tmp_path) -> None:
    done = sweep.run_sweep(tmp_path / "run", ["tiny-mcd"], SPECS[1:2], store=model_store, n=N,
                           progress=False)  # fmt: skip
    assert done.report is not None
    text = done.report.read_text(encoding="utf-8")
    assert "Out-of-distribution detection AUROC" in text and "uniform-noise" in text
    assert (done.run_dir / "figures" / "ood_auroc.png").is_file()


def _bad_sweep(model_store: Path, out: Path, *extra: str):
    return _invoke("sweep", "quick", "--model", "tiny-det", "--store", str(model_store), "--out", str(out),
                   "--device", "cpu", "--no-ood", "--quiet", *extra)  # fmt: skip


def test_cli_bad_input_one_line_nothing_written(model_store, tmp_path) -> None:
    out = tmp_path / "run"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[attacks]]\nattack = "fgsm"\neps = [0.1]\nsteps_typo = 1\n')
    result = _invoke("sweep", str(bad), "--model", "tiny-det", "--store", str(model_store), "--out", str(out))
    assert "steps_typo" in _one_line(result)
    bad.write_text('[[attacks]]\nattack = "fgsm"\neps = []\n')
    result = _invoke("sweep", str(bad), "--model", "tiny-det", "--store", str(model_store), "--out", str(out))
    assert "eps list is empty" in _one_line(result)
    assert "no checkpoint for 'nope'" in _one_line(_invoke("sweep", "quick", "--model", "nope", "--store",
                                                           str(model_store), "--out", str(out)))  # fmt: skip
    assert "larger than the mnist5k test set" in _one_line(_bad_sweep(model_store, out, "--n", "5000"))
    assert "not both" in _one_line(_bad_sweep(model_store, out, "--run-id", "x"))
    assert not out.exists()
    # An output path that cannot be written: under a file.
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert "is a file" in _one_line(_bad_sweep(model_store, blocker / "run"))
    assert "is a file" in _one_line(_bad_sweep(model_store, blocker))
    assert blocker.read_text() == "x"


def test_cli_refuses_foreign_and_incompatible_folders(model_store, tmp_path) -> None:
    # A folder holding an `attack` run (results but no cells) or other files is not taken over.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert "not empty and holds no sweep" in _one_line(_bad_sweep(model_store, foreign))
    (foreign / RESULTS_CSV).write_text("model,attack,eps,input,metric,value\n")
    assert "results that no sweep recorded" in _one_line(_bad_sweep(model_store, foreign))
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt", RESULTS_CSV]
    # A sweep folder written under another schema version.
    run_dir = tmp_path / "old"
    _sweep(run_dir, model_store, specs=SPECS[:1])
    meta = json.loads((run_dir / META).read_text())
    (run_dir / META).write_text(json.dumps({**meta, "schema_version": 99}))
    before = sorted(p.name for p in run_dir.rglob("*"))
    assert "schema version 99" in _one_line(_bad_sweep(model_store, run_dir))
    assert "schema version 99" in _one_line(_invoke("report", str(run_dir)))
    with pytest.raises(UserError, match="schema version 99"):
        read_run(run_dir)
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def test_cli_report_on_missing_or_unfinished_runs(model_store, tmp_path, monkeypatch) -> None:
    assert "does not exist" in _one_line(_invoke("report", str(tmp_path / "missing")))
    # A sweep killed before its end holds cells but no results yet.
    monkeypatch.setattr(compute, "attack_cell", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path / "killed", model_store)
    assert "holds no results" in _one_line(_invoke("report", str(tmp_path / "killed")))
    assert not (tmp_path / "killed" / "index.html").exists()


def test_help_lists_every_option() -> None:
    result = _invoke("sweep", "--help")
    assert result.exit_code == 0
    for option in ("--model", "--out", "--run-id", "--resume", "--no-resume", "--overwrite", "--n", "--seed",
                   "--device", "--batch-size", "--store", "--data-dir", "--train", "--quiet", "--ood"):  # fmt: skip
        assert option in result.output, option


def test_train_if_missing_skips_an_existing_checkpoint(tmp_path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('dataset = "mnist5k"\n[net]\narch = "mlp"\nwidths = [8]\n[posterior]\nkind = "det"\n'
                      "[train]\nepochs = 1\nbatch_size = 256\neval_samples = 1\nval_fraction = 0.0\n")  # fmt: skip
    args = [
        "train",
        str(recipe),
        "--store",
        str(tmp_path / "models"),
        "--device",
        "cpu",
        "--quiet",
        "--if-missing",
    ]
    first = _invoke(*args)
    assert first.exit_code == 0 and "test accuracy" in first.output, first.output
    again = _invoke(*args)
    assert again.exit_code == 0 and "exists" in again.output and "test accuracy" not in again.output
    other = _invoke(*args, "--seed", "1")  # another recipe (seed): trained
    assert other.exit_code == 0 and "test accuracy" in other.output
    assert len(list((tmp_path / "models" / "tiny").iterdir())) == 2
