"""Tests of robusthyper.evaluate, robusthyper.results and the uncertainty metrics: the tidy table (settings in
every row, robust accuracy over all examples, eps = 0 equals clean, worst case over attacks and restarts),
atomic report folders, and entropy / mutual information against closed forms."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_recipe
from torch import nn

from robusthyper.attacks import make_spec
from robusthyper.errors import UserError
from robusthyper.evaluate import WORST_CASE, run, summary
from robusthyper.loading import ModelUnderTest, is_factory_ref, load_factory
from robusthyper.metrics import expected_entropy, mutual_information, nll, predictive_entropy
from robusthyper.results import META, RESULTS_CSV, read_results, write_report
from robusthyper.train import fit

SETTINGS = ["model", "posterior", "dataset", "n", "attack", "norm", "eps", "steps", "step_size", "restarts",
            "random_init", "eot", "k_attack", "k_eval", "seed", "protocol"]  # fmt: skip


# ---------------------------------------------------------------- metrics: closed forms


def test_entropy_of_uniform_and_one_hot() -> None:
    uniform = torch.zeros(3, 2, 10)
    assert torch.allclose(predictive_entropy(uniform), torch.full((2,), math.log(10)), atol=1e-6)
    confident = torch.full((1, 2, 10), -1e4)
    confident[..., 3] = 0
    assert torch.allclose(predictive_entropy(confident), torch.zeros(2), atol=1e-6)


def test_mutual_information_closed_forms() -> None:
    # Two confident samples that disagree: H[p̄] = log 2, mean H[p_k] = 0, so MI = log 2.
    logits = torch.full((2, 1, 4), -1e4)
    logits[0, 0, 0] = 0
    logits[1, 0, 1] = 0
    assert torch.allclose(mutual_information(logits), torch.tensor([math.log(2)]), atol=1e-6)
    # Identical samples: no epistemic uncertainty, whatever their entropy.
    same = torch.randn(1, 5, 7).expand(6, 5, 7)
    assert torch.allclose(mutual_information(same), torch.zeros(5), atol=1e-6)
    # Bernoulli check: p1 = (0.9, 0.1), p2 = (0.5, 0.5): MI = H(0.7) - (H(0.9) + H(0.5)) / 2.
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    two = torch.tensor([[[math.log(0.9), math.log(0.1)]], [[0.0, 0.0]]])
    expected = h(0.7) - (h(0.9) + h(0.5)) / 2
    assert torch.allclose(mutual_information(two), torch.tensor([expected]), atol=1e-6)
    assert torch.allclose(expected_entropy(two), torch.tensor([(h(0.9) + h(0.5)) / 2]), atol=1e-6)


def test_nll() -> None:
    log_p = torch.log(torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    assert torch.allclose(nll(log_p, torch.tensor([1, 0])), torch.tensor([-math.log(0.75), math.log(2)]))


# ---------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def models(small_mnist):
    det = fit(tiny_recipe("det", epochs=4, val_fraction=0.0), small_mnist, progress=False).posterior.eval()
    mcd = fit(tiny_recipe("mcd", epochs=4, val_fraction=0.0), small_mnist, progress=False).posterior.eval()
    return [ModelUnderTest("tiny-det", det, kind="det"), ModelUnderTest("tiny-mcd", mcd, kind="mcd")]


@pytest.fixture(scope="module")
def evaluation(models, small_mnist):
    specs = [make_spec(attack=a, eps=e, steps=1 if a == "fgsm" else 10, k_attack=3, k_eval=8)
             for a in ("pgd", "fgsm") for e in (0.0, 0.06)]  # fmt: skip
    return run(models, specs, small_mnist.test, dataset="mnist5k", n=60, batch_size=32, progress=False)


def _value(frame: pd.DataFrame, **where) -> float:
    rows = frame
    for key, value in where.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, where
    return float(rows["value"].iloc[0])


def test_table_is_tidy_with_settings_in_every_row(evaluation) -> None:
    frame = evaluation.results
    assert set(SETTINGS + ["input", "metric", "value"]) <= set(frame.columns)
    assert frame[["model", "attack", "eps", "input", "metric"]].notna().all().all()
    assert (frame["n"] == 60).all() and (frame["dataset"] == "mnist5k").all()
    assert set(frame["metric"]) >= {"accuracy", "nll", "entropy", "mutual_information", "seconds"}
    # A point estimate records K_attack = 1 (its samples are all the same), MC dropout the asked 3.
    assert set(frame[frame["model"] == "tiny-det"]["k_attack"]) == {1}
    assert set(frame[frame["model"] == "tiny-mcd"]["k_attack"]) == {3}
    assert np.issubdtype(frame["value"].dtype, np.floating)


@pytest.mark.parametrize("model", ["tiny-det", "tiny-mcd"])
def test_eps_zero_gives_clean_and_attacks_lower_accuracy(evaluation, model) -> None:
    frame = evaluation.results
    for attack in ("pgd-10", "fgsm"):
        clean = _value(frame, model=model, attack=attack, eps=0.0, input="clean", metric="accuracy")
        at_zero = _value(frame, model=model, attack=attack, eps=0.0, input="adversarial", metric="accuracy")
        assert at_zero == clean  # common random numbers: the same posterior samples evaluate both
        robust = _value(frame, model=model, attack=attack, eps=0.06, input="adversarial", metric="accuracy")
        assert robust < clean
        assert _value(frame, model=model, attack=attack, eps=0.06, input="adversarial",
                      metric="max_perturbation") <= 0.06 + 1e-5  # fmt: skip
    pgd = _value(frame, model=model, attack="pgd-10", eps=0.06, input="adversarial", metric="accuracy")
    fgsm = _value(frame, model=model, attack="fgsm", eps=0.06, input="adversarial", metric="accuracy")
    worst = _value(frame, model=model, attack=WORST_CASE, eps=0.06, input="adversarial", metric="accuracy")
    assert pgd <= fgsm
    assert worst <= min(pgd, fgsm)


def test_robust_accuracy_counts_all_examples(evaluation) -> None:
    ex = evaluation.examples
    sel = ex[(ex["model"] == "tiny-mcd") & (ex["attack"] == "pgd-10") & (ex["eps"] == 0.06)]
    assert len(sel) == 60
    robust = _value(evaluation.results, model="tiny-mcd", attack="pgd-10", eps=0.06, input="adversarial",
                    metric="accuracy")  # fmt: skip
    assert robust == pytest.approx(sel["adv_correct"].mean())  # over all n, not over clean-correct ones
    worst = ex[(ex["model"] == "tiny-mcd") & (ex["attack"] == WORST_CASE) & (ex["eps"] == 0.06)]
    per_attack = ex[(ex["model"] == "tiny-mcd") & (ex["eps"] == 0.06) & (ex["attack"] != WORST_CASE)]
    survived_all = per_attack.groupby("index")["adv_correct"].all()
    assert (worst.set_index("index")["adv_correct"] == survived_all).all()


def test_restarts_take_the_worst_case(models, small_mnist) -> None:
    one = run(models[:1], [make_spec(eps=0.08, steps=3, restarts=1)], small_mnist.test, dataset="mnist5k",
              n=40, batch_size=40, progress=False)  # fmt: skip
    three = run(models[:1], [make_spec(eps=0.08, steps=3, restarts=3)], small_mnist.test, dataset="mnist5k",
                n=40, batch_size=40, progress=False)  # fmt: skip
    acc = lambda ev: _value(ev.results, input="adversarial", metric="accuracy")  # noqa: E731
    assert acc(three) <= acc(one)
    assert (three.results["restarts"] == 3).all()


def test_paper_protocol_runs_unclipped_and_stays_out_of_the_worst_case(models, small_mnist) -> None:
    # An unclipped paper protocol may leave [0, 1] (it must not raise) and is never part of the worst case.
    specs = [make_spec(attack="paper-bbh-fgsm", eps=0.3, samples_averaged=4, k_eval=4),
             make_spec(attack="fgsm", eps=0.3, k_attack=2, k_eval=4)]  # fmt: skip
    ev = run(models[1:], specs, small_mnist.test, dataset="mnist5k", n=50, batch_size=25, progress=False)
    paper = ev.results[ev.results["attack"] == "paper-bbh-fgsm"]
    assert len(paper) and (paper["protocol"] == "paper-bbh").all()
    assert (ev.results[ev.results["attack"] == "fgsm"]["protocol"] == "strong").all()
    assert WORST_CASE not in set(ev.results["attack"])  # one strong attack per budget: no worst case
    assert _value(paper, input="adversarial", metric="max_perturbation") <= 0.3 + 1e-5


def test_summary_is_one_row_per_cell(evaluation) -> None:
    wide = summary(evaluation.results)
    assert {"clean_acc", "robust_acc", "adv_mi", "clean_mi"} <= set(wide.columns)
    assert len(wide) == 2 * (2 * 2 + 2)  # 2 models x (2 attacks x 2 eps + worst case at 2 eps)


def test_run_rejects_bad_input(models, small_mnist) -> None:
    spec = make_spec(eps=0.1, steps=1)
    with pytest.raises(UserError, match="--n 201"):
        run(models, [spec], small_mnist.test, dataset="mnist5k", n=201, progress=False)
    with pytest.raises(UserError, match="no attack"):
        run(models, [], small_mnist.test, dataset="mnist5k", n=10, progress=False)
    with pytest.raises(UserError, match="no model"):
        run([], [spec], small_mnist.test, dataset="mnist5k", n=10, progress=False)


class Flat(nn.Module):
    """A fully masked model: its logits do not depend on the input through any gradient (zero everywhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], 10) + 0 * x.flatten(1)[:, :10]


class NonFinite(nn.Module):
    """A model whose input gradient is NaN wherever a pixel is 0 (0 * d sqrt(x)/dx = 0 * inf)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)) + 0 * torch.sqrt(x).flatten(1)[:, :10]


@pytest.mark.parametrize(
    ("net", "warning", "health"),
    [(Flat, "exactly zero on all 8 probe examples", "grad_zero_fraction"),
     (NonFinite, "NaN or infinite", "grad_nan_fraction")],
)  # fmt: skip
def test_a_masked_or_broken_model_is_evaluated_with_a_warning(
    small_mnist, caplog, net, warning, health
) -> None:
    """No hard stop: the numbers are recorded (the sanity flags mark them) and one warning line says why
    they mean nothing."""
    from robusthyper.evaluate import check_gradients
    from robusthyper.loading import ModulePosterior

    torch.manual_seed(0)
    model = ModelUnderTest("masked", ModulePosterior(net(), stochastic=False), kind="module")
    specs = [make_spec(eps=0.1, steps=1, k_eval=1), make_spec(attack="fgsm", eps=0.1, k_eval=1)]
    with caplog.at_level("WARNING", logger="robusthyper.evaluate"):
        evaluation = run([model], specs, small_mnist.test, dataset="mnist5k", n=8, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "robusthyper.evaluate"]
    assert len(lines) == 1 and lines[0].startswith("masked: ") and warning in lines[0], lines
    acc = evaluation.results.query("metric == 'accuracy' and input == 'adversarial'")
    assert set(acc["attack"]) == {"pgd-1", "fgsm", WORST_CASE} and acc["value"].notna().all()
    x, y = small_mnist.test.x[:8], small_mnist.test.y[:8]
    assert check_gradients(model.posterior, x, y, k=1)[health] > 0.5
    caplog.clear()
    with caplog.at_level("WARNING", logger="robusthyper.evaluate"):  # a caller that probes itself
        run(
            [model], specs[:1], small_mnist.test, dataset="mnist5k", n=8, progress=False, gradient_check=False
        )
    assert not [r for r in caplog.records if r.name == "robusthyper.evaluate"]


# ---------------------------------------------------------------- factories


def test_factory_refs_and_loading(tmp_path, monkeypatch) -> None:
    (tmp_path / "user_models.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "def stochastic():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Dropout(0.5)).train()\n"
        "def deterministic():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
        "def wrong():\n"
        "    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert is_factory_ref("user_models:stochastic") and not is_factory_ref("det")
    assert load_factory("user_models:stochastic", (1, 28, 28), "cpu").posterior.stochastic
    assert not load_factory("user_models:deterministic", (1, 28, 28), "cpu").posterior.stochastic
    with pytest.raises(UserError, match="returned int"):
        load_factory("user_models:wrong", (1, 28, 28), "cpu")
    with pytest.raises(UserError, match="no callable 'nope'"):
        load_factory("user_models:nope", (1, 28, 28), "cpu")
    with pytest.raises(UserError, match="cannot import"):
        load_factory("no_such_module_xyz:f", (1, 28, 28), "cpu")
    with pytest.raises(UserError, match="fails on inputs"):
        load_factory("user_models:deterministic", (3, 32, 32), "cpu")


# ---------------------------------------------------------------- results folders


def test_write_report_is_atomic_and_complete(evaluation, tmp_path) -> None:
    folder = write_report(evaluation.results, {"command": "test", "specs": evaluation.settings["specs"]},
                          tmp_path / "reports", "run-1", evaluation.examples)  # fmt: skip
    assert folder == tmp_path / "reports" / "run-1"
    assert (folder / RESULTS_CSV).is_file()
    meta = json.loads((folder / META).read_text())
    assert meta["run_id"] == "run-1" and "torch" in meta["versions"] and "commit" in meta["git"]
    assert meta["specs"][0]["attack"] == "pgd"
    back = read_results(folder)
    assert len(back) == len(evaluation.results)
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["run-1"]  # no .partial left behind
    with pytest.raises(UserError, match="already exists"):
        write_report(evaluation.results, {}, tmp_path / "reports", "run-1")


def test_write_report_leaves_nothing_on_failure(tmp_path, monkeypatch) -> None:
    frame = pd.DataFrame({"value": [1.0]})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError):
        write_report(frame, {}, tmp_path, "run-2")
    assert list(tmp_path.iterdir()) == []
