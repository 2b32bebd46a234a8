"""Tests of robusthyper.attacks: eps parsing, AttackSpec validation, presets, the registry, and the attacks
themselves: budgets respected, accuracy lowered, PGD <= FGSM, bit-for-bit agreement with torchattacks on a
model with frozen posterior samples, and a wrapped deterministic model attacked like the bare one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_posterior, tiny_recipe
from pydantic import ValidationError
from test_ensemble import FrozenSamples
from torch import nn

from robusthyper.attacks import (
    FAMILIES,
    AttackSpec,
    available_presets,
    build_attack,
    expand,
    load_preset,
    make_spec,
    parse_eps,
)
from robusthyper.ensemble import StochasticEnsemble, art_classifier
from robusthyper.errors import ConfigError, UserError
from robusthyper.nets import frozen
from robusthyper.train import fit

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def trained(small_mnist):
    """A tiny deterministic MLP and a tiny BBB MLP, trained for a few epochs on 600 digits."""
    det = fit(tiny_recipe("det", epochs=4, val_fraction=0.0), small_mnist, progress=False).posterior
    bbb = fit(tiny_recipe("bbb", epochs=4, val_fraction=0.0), small_mnist, progress=False).posterior
    return {"det": det.eval(), "bbb": bbb.eval()}


@pytest.fixture(scope="module")
def batch(small_mnist):
    return small_mnist.test.x[:64], small_mnist.test.y[:64]


def _onehot(y: torch.Tensor) -> np.ndarray:
    return np.eye(10, dtype=np.float32)[y.numpy()]


def _attack(posterior, spec: AttackSpec, x, y) -> torch.Tensor:
    np.random.seed(spec.seed)
    with frozen(posterior):
        attack = build_attack(posterior, spec, SHAPE, 10, batch_size=64)
        return attack.generate(x, y)


def _accuracy(posterior, x, y, k: int = 16) -> float:
    with torch.no_grad():
        ens = StochasticEnsemble(posterior, k, torch.Generator().manual_seed(1))
        return (ens(x).argmax(-1) == y).float().mean().item()


# ---------------------------------------------------------------- eps and specs


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.1", 0.1), ("8/255", 8 / 255), (" 2 / 255 ", 2 / 255), (0, 0.0), (0.3, 0.3), ("0", 0.0)],
)
def test_parse_eps(text, value) -> None:
    assert parse_eps(text) == pytest.approx(value, abs=1e-15)


@pytest.mark.parametrize("text", ["8/0", "abc", "-0.1", "nan", "inf", "1/", "", True, None])
def test_parse_eps_rejects(text) -> None:
    with pytest.raises(ValueError):
        parse_eps(text)


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"eps": -0.1}, "negative"),
        ({"eps": 1.5}, "> 1 for the Linf norm"),
        ({"eps": "8/0"}, "divides by zero"),
        ({"eps": "abc"}, "not a number"),
        ({"eps": 0.1, "steps": 0}, "steps"),
        ({"eps": 0.1, "k_attack": 0}, "k_attack"),
        ({"eps": 0.1, "k_eval": -1}, "k_eval"),
        ({"eps": 0.1, "restarts": 0}, "restarts"),
        ({"eps": 0.1, "attack": "cw"}, "unknown attack 'cw'"),
        ({"eps": 0.1, "norm": "l1"}, "unknown norm 'l1'"),
        ({"eps": 0.1, "eot": "median"}, "unknown eot"),
        ({"eps": 0.1, "stepz": 3}, "unknown key 'stepz'"),
        ({"eps": 0.1, "attack": "fgsm", "steps": 5}, "fgsm takes one step"),
        ({"eps": 0.1, "random_init": False, "restarts": 3}, "needs random_init"),
    ],
)
def test_spec_rejects_bad_values_in_one_line(values, fragment) -> None:
    with pytest.raises(ConfigError) as info:
        make_spec("cli", **values)
    message = str(info.value)
    assert fragment in message and "\n" not in message and message.startswith("cli")


def test_spec_defaults_and_frozen() -> None:
    spec = make_spec(eps="8/255")
    assert spec.attack == "pgd" and spec.steps == 40 and spec.random_init
    assert spec.step_size == pytest.approx(2 / 255) and spec.k_attack == 20 and spec.k_eval == 100
    assert spec.label == "pgd-40" and spec.settings()["eot"] == "bma"
    assert make_spec(eps=0.1, attack="FGSM").random_init is False
    assert make_spec(eps=3.0, norm="L2").eps == 3.0  # L2 budgets may exceed 1
    with pytest.raises(ValidationError):
        spec.eps = 0.2  # type: ignore[misc]


def test_expand_eps_grid() -> None:
    specs = expand({"attack": "pgd", "eps": [0, "8/255", 0.3]})
    assert [s.eps for s in specs] == pytest.approx([0.0, 8 / 255, 0.3])
    with pytest.raises(UserError, match="no eps"):
        expand({"attack": "pgd"})


@pytest.mark.parametrize("name", available_presets())
def test_presets_load(name: str) -> None:
    specs = load_preset(name)
    assert specs and all(isinstance(s, AttackSpec) for s in specs)
    assert load_preset(name, {"k_attack": 3})[0].k_attack == 3


def test_preset_rejects_unknown_keys(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('attack = "pgd"\neps = [0.1]\nsteps = 10\nwat = 1\n')
    with pytest.raises(ConfigError, match="unknown key 'wat'"):
        load_preset(str(path))
    with pytest.raises(UserError, match="unknown attack preset"):
        load_preset("no-such-preset")


def test_registry_holds_the_built_in_families() -> None:
    assert list(FAMILIES) == ["fgsm", "pgd", "apgd-ce", "apgd-dlr", "square", "pgd-adaptive", "paper-bhn-fgsm",
                              "paper-bbh-fgsm"]  # fmt: skip


# ---------------------------------------------------------------- the attacks


CASES = [
    ("fgsm", "linf", 0.1, {}),
    ("pgd", "linf", 0.1, {"steps": 5}),
    ("pgd", "l2", 1.0, {"steps": 5}),
    ("apgd-ce", "linf", 0.1, {"steps": 5}),
    ("apgd-dlr", "l2", 1.0, {"steps": 5}),
    ("square", "linf", 0.1, {"steps": 20}),
    ("square", "l2", 1.0, {"steps": 20}),
    ("fgsm", "l2", 1.0, {}),
]


@pytest.mark.parametrize(("attack", "norm", "eps", "extra"), CASES)
@pytest.mark.parametrize("eot", ["bma", "mean-loss"])
def test_budget_and_box(trained, batch, attack, norm, eps, extra, eot) -> None:
    x, y = batch
    x, y = x[:16], y[:16]
    spec = make_spec(attack=attack, norm=norm, eps=eps, eot=eot, k_attack=3, **extra)
    x_adv = _attack(trained["bbb"], spec, x, y)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape


def test_attacks_break_a_deterministic_model(trained, batch) -> None:
    x, y = batch
    det = trained["det"]
    clean = _accuracy(det, x, y)
    assert clean > 0.6
    fgsm = _accuracy(det, _attack(det, make_spec(attack="fgsm", eps=0.1), x, y), y)
    pgd = _accuracy(det, _attack(det, make_spec(attack="pgd", eps=0.1, steps=20), x, y), y)
    strong = _accuracy(det, _attack(det, make_spec(attack="pgd", eps=0.3, steps=20), x, y), y)
    assert pgd <= fgsm <= clean
    assert pgd < clean
    assert strong <= 0.05


def test_eot_attack_lowers_bbb_accuracy(trained, batch) -> None:
    x, y = batch
    bbb = trained["bbb"]
    adv = _attack(bbb, make_spec(attack="pgd", eps=0.2, steps=10, k_attack=4), x, y)
    assert _accuracy(bbb, adv, y) < _accuracy(bbb, x, y) - 0.3


def test_seeded_attack_is_reproducible(trained, batch) -> None:
    x, y = batch
    spec = make_spec(attack="pgd", eps=0.1, steps=3, k_attack=2, seed=5)
    torch.manual_seed(0)
    a = _attack(trained["bbb"], spec, x[:8], y[:8])
    torch.manual_seed(99)
    b = _attack(trained["bbb"], spec, x[:8], y[:8])
    assert torch.equal(a, b)


def test_matches_torchattacks_bit_for_bit(trained, batch) -> None:
    """With frozen posterior samples (common random numbers) our ART path equals torchattacks exactly
    (Linf; for L2, ART and torchattacks normalise, project and clip in different orders)."""
    import torchattacks

    x, y = batch
    x, y = x[:32], y[:32]
    post = FrozenSamples(trained["bbb"], k=4)
    model = StochasticEnsemble(post, 4)
    with frozen(post):
        ours = _attack(post, make_spec(attack="fgsm", eps=0.1, k_attack=4), x, y)
        theirs = torchattacks.FGSM(model, eps=0.1)(x, y)
        assert torch.equal(ours, theirs)
        spec = make_spec(attack="pgd", eps=0.1, steps=7, step_size=0.02, random_init=False, k_attack=4)
        ours = _attack(post, spec, x, y)
        theirs = torchattacks.PGD(model, eps=0.1, alpha=0.02, steps=7, random_start=False)(x, y)
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, x)


def test_wrapped_deterministic_model_attacked_like_the_bare_net(trained, batch) -> None:
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    x, y = batch
    det = trained["det"]
    spec = make_spec(attack="pgd", eps=0.1, steps=10, random_init=False, k_attack=20)
    wrapped = _attack(det, spec, x, y)
    with frozen(det):
        bare = PyTorchClassifier(det.net, nn.CrossEntropyLoss(), input_shape=SHAPE, nb_classes=10,
                                 clip_values=(0.0, 1.0))  # fmt: skip
        pgd = ProjectedGradientDescent(bare, eps=0.1, eps_step=spec.step_size, max_iter=10, num_random_init=0,
                                       batch_size=64, verbose=False)  # fmt: skip
        plain = torch.from_numpy(pgd.generate(x.numpy(), _onehot(y)))
    # CE on log-softmax and CE on logits have the same gradient up to rounding: the sign steps agree.
    assert (wrapped - plain).abs().max() < 1e-5 or (wrapped != plain).float().mean() < 1e-3
    with torch.no_grad():
        assert torch.equal(det.net(wrapped).argmax(-1), det.net(plain).argmax(-1))


def test_mean_loss_and_bma_attacks_agree_for_one_sample(trained, batch) -> None:
    x, y = batch
    post = FrozenSamples(trained["bbb"], k=1)
    a = _attack(post, make_spec(attack="fgsm", eps=0.1, k_attack=1, eot="bma"), x, y)
    b = _attack(post, make_spec(attack="fgsm", eps=0.1, k_attack=1, eot="mean-loss"), x, y)
    assert (a != b).float().mean() < 1e-3


def test_build_attack_refuses_eps_zero(trained) -> None:
    with pytest.raises(ValueError, match="eps = 0"):
        build_attack(trained["det"], make_spec(eps=0), SHAPE, 10)


def test_tiny_posterior_unused_guard() -> None:
    # keeps the conftest import honest for linters: a fresh posterior attacks without training
    post = tiny_posterior("det")
    x = torch.rand((4, *SHAPE))
    clf = art_classifier(StochasticEnsemble(post, 1), "bma", input_shape=SHAPE, nb_classes=10)
    assert clf.predict(x.numpy()).shape == (4, 10)


# ---------------------------------------------------------------- K_attack lists (EOT studies)


def test_expand_k_attack_list() -> None:
    specs = expand({"attack": "pgd", "eps": [0.1, 0.2], "k_attack": [1, 5, 5, 20]})
    assert [(s.eps, s.k_attack) for s in specs] == [
        (0.1, 1),
        (0.1, 5),
        (0.1, 20),
        (0.2, 1),
        (0.2, 5),
        (0.2, 20),
    ]
    assert [s.k_attack for s in expand({"attack": "pgd", "eps": 0.1, "k_attack": [50]})] == [50]
    assert len(expand({"attack": "pgd", "eps": [0.1, "1/10"]})) == 1  # the same eps twice: one spec
    # A command-line K replaces a preset's list (the gate and `--k-attack` pass scalars).
    assert [s.k_attack for s in expand({"attack": "pgd", "eps": 0.1, "k_attack": 3})] == [3]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [([], "k_attack list is empty"), ([1.5], "holds 1.5"), ([0], "holds 0"), (["5"], "holds '5'"),
     ([True], "holds True"), ([5, -1], "holds -1")],
)  # fmt: skip
def test_k_attack_list_errors_are_one_line(value, fragment) -> None:
    with pytest.raises(ConfigError) as info:
        expand({"attack": "pgd", "eps": 0.1, "k_attack": value}, "suite.toml [[attacks]] #2")
    message = str(info.value)
    assert fragment in message and "\n" not in message and message.startswith("suite.toml [[attacks]] #2")


def test_overlapping_tables_give_each_spec_once(tmp_path) -> None:
    path = tmp_path / "study.toml"
    path.write_text('[[attacks]]\nattack = "pgd"\neps = [0, 0.1, 0.2]\nsteps = 5\nk_attack = 20\n'
                    '[[attacks]]\nattack = "pgd"\neps = 0.1\nsteps = 5\nk_attack = [1, 5, 20, 50]\n'
                    '[[attacks]]\nattack = "pgd"\neps = [0.2, 0.1]\nsteps = 5\nk_attack = 20\n')  # fmt: skip
    specs = load_preset(str(path))
    assert [(s.eps, s.k_attack) for s in specs] == [(0.0, 20), (0.1, 20), (0.2, 20), (0.1, 1), (0.1, 5),
                                                    (0.1, 50)]  # fmt: skip
    assert len(set(specs)) == len(specs)
    # An override of K collapses the study into the main grid's specs, still without duplicates.
    assert [(s.eps, s.k_attack) for s in load_preset(str(path), {"k_attack": 3})] == [
        (0.0, 3),
        (0.1, 3),
        (0.2, 3),
    ]
    path.write_text('[[attacks]]\nattack = "pgd"\neps = 0.1\nk_attack = []\n')
    with pytest.raises(ConfigError, match=r"\[\[attacks\]\] #1|k_attack list is empty"):
        load_preset(str(path))


def test_shipped_suites_hold_the_honest_evaluation_checks() -> None:
    standard = load_preset("standard")
    eot = sorted(s.k_attack for s in standard if s.label == "pgd-40" and s.eps == 0.1)
    assert eot == [1, 5, 20, 50] and len(set(standard)) == len(standard)
    assert {s.eps for s in standard if s.attack == "pgd-adaptive"} == {0.05, 0.1, 0.15, 0.2, 0.3}
    for protocol in ("paper-bhn-fgsm", "paper-bbh-fgsm"):
        paper = [s for s in standard if s.attack == protocol]
        assert {s.eps for s in paper} == {0.05, 0.1, 0.15, 0.2, 0.3}  # the strong grid's eps > 0
        assert all(not s.clip and s.k_attack == 1 for s in paper)
    quick = load_preset("quick")
    assert sorted(s.k_attack for s in quick if s.label == "pgd-20" and s.eps == 0.1) == [1, 5, 10, 20]
    assert {s.eps for s in quick if s.attack == "pgd-adaptive"} == {0.1, 0.2}
    assert {s.attack for s in quick} >= {"paper-bhn-fgsm", "paper-bbh-fgsm"}
    assert len(set(quick)) == len(quick)
