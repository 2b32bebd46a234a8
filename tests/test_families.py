"""Tests of the attack-family registry (robusthyper.attacks.FAMILIES): the attack contract run over every
registered family, what each declaration implies for specs, labels and builders, the README table, a cheap
`--help`, and a new family (BIM, declared in this file) that gets its defaults, `--help` line and sanity checks
from one `registered(...)` call."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_recipe
from typer.testing import CliRunner

import robusthyper.ensemble
from robusthyper import sanity
from robusthyper.attacks import (
    FAMILIES,
    ArtAdapter,
    ArtAttack,
    ArtEstimator,
    Attack,
    AttackFamily,
    AttackSpec,
    Norm,
    Trait,
    build_attack,
    family,
    family_of_label,
    make_spec,
    markdown_table,
    register,
    registered,
)
from robusthyper.attacks.base import cross_entropy
from robusthyper.attacks.registry import table_in, with_table
from robusthyper.attacks.spec import applicable
from robusthyper.cli import create_app
from robusthyper.ensemble import StochasticEnsemble
from robusthyper.errors import ConfigError
from robusthyper.nets import frozen
from robusthyper.train import fit

SHAPE = (1, 28, 28)
README = Path(__file__).parents[1] / "README.md"
runner = CliRunner()


@pytest.fixture(scope="module")
def det(small_mnist):
    """A tiny deterministic MLP trained for a few epochs: every attack should break it."""
    return fit(tiny_recipe("det", epochs=4, val_fraction=0.0), small_mnist, progress=False).posterior.eval()


@pytest.fixture(scope="module")
def batch(small_mnist):
    return small_mnist.test.x[:48], small_mnist.test.y[:48]


def _accuracy(posterior, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        ens = StochasticEnsemble(posterior, 1, torch.Generator().manual_seed(1))
        return (ens(x).argmax(-1) == y).float().mean().item()


def _generate(
    posterior,
    spec: AttackSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    torch_seed: int,
    python_random: bool = False,
) -> torch.Tensor:
    """As `robusthyper.evaluate` runs an attack: numpy seeded, a fresh attack with its own generator.
    `python_random` also seeds Python's `random`, which ART's Square draws from for L2 (see below)."""
    np.random.seed(spec.seed)
    if python_random:
        random.seed(spec.seed)
    torch.manual_seed(torch_seed)  # the global RNG must not matter
    with frozen(posterior):
        attack = build_attack(posterior, spec, SHAPE, 10, batch_size=32)
        assert isinstance(attack, Attack)
        return attack.generate(x, y)


def check_contract(
    posterior, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, python_random: bool = False
) -> torch.Tensor:
    """Shape, dtype, device, the eps budget, [0, 1] when clipped, the input untouched, the same seed giving
    the same output; returns the adversarial inputs."""
    before = x.clone()
    x_adv = _generate(posterior, spec, x, y, 0, python_random)
    assert torch.equal(x, before), "generate changed its input"
    assert x_adv.shape == x.shape and x_adv.dtype == torch.float32 and x_adv.device == x.device
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if spec.norm is Norm.LINF else delta.norm(dim=1)
    assert (size <= spec.eps + 1e-5).all(), size.max()
    if spec.clip:
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x_adv, _generate(posterior, spec, x, y, 99, python_random)), "not reproducible"
    return x_adv


# ---------------------------------------------------------------- the contract, over every registered family

CONTRACT_EPS = {Norm.LINF: 0.15, Norm.L2: 2.0}
MAX_STEPS, MAX_QUERIES = 10, 100
"""Iterations are capped so the suite stays fast; every other setting is the family's default (the defaults
themselves are checked in `test_declaration_drives_specs_labels_and_builders`)."""
CASES = [(name, norm) for name, fam in FAMILIES.items() for norm in fam.norms]


def _contract_spec(name: str, norm: Norm) -> AttackSpec:
    fam = family(name)
    cap = MAX_QUERIES if fam.has(Trait.GRADIENT_FREE) else MAX_STEPS
    steps = {} if fam.is_single_step else {"steps": min(fam.steps, cap)}
    return make_spec(attack=name, norm=norm, eps=CONTRACT_EPS[norm], k_eval=1, **steps)


@pytest.mark.parametrize(("name", "norm"), CASES, ids=[f"{n}-{m.value}" for n, m in CASES])
def test_attack_contract(det, batch, name: str, norm: Norm) -> None:
    """Every family at its defaults: a valid attack that lowers the accuracy of a model it should break
    (the papers' weak protocols at least do not raise it)."""
    x, y = batch
    spec = _contract_spec(name, norm)
    x_adv = check_contract(det, spec, x, y, python_random=(name, norm) == ("square", Norm.L2))
    clean, robust = _accuracy(det, x, y), _accuracy(det, x_adv, y)
    assert clean > 0.6
    if family(name).has(Trait.PAPER_PROTOCOL):
        assert robust <= clean
    else:
        assert robust < clean - 0.1, (clean, robust)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_declaration_drives_specs_labels_and_builders(det, monkeypatch, name: str) -> None:
    fam = FAMILIES[name]
    spec = make_spec(attack=name.upper(), eps=0.2)  # spec_defaults hold only AttackSpec fields
    assert spec.attack == name and spec.family is fam and spec.protocol == fam.protocol
    assert (spec.steps, spec.random_init) == (fam.steps, fam.random_init)
    assert spec.step_size == (None if fam.step_factor is None else pytest.approx(fam.step_factor * 0.2))
    assert all(spec.settings()[key] == value for key, value in fam.spec_defaults.items())
    assert family_of_label(spec.label) == name
    if not fam.is_single_step:
        assert family_of_label(make_spec(attack=name, eps=0.2, steps=7).label) == name
    for norm in set(Norm) - set(fam.norms):
        with pytest.raises(ConfigError, match=f"{name} supports norm = linf only"):
            make_spec(attack=name, eps=0.2, norm=norm)
    given = {"steps": 9, "step_size": 0.01, "random_init": False, "k_attack": 2}
    kept = applicable(name, given)
    assert ("steps" in kept) == (not fam.is_single_step)
    assert ("step_size" in kept) == (not fam.is_single_step and fam.step_factor is not None)
    assert "k_attack" in kept
    assert fam.summary and "\n" not in fam.summary and fam.norms
    # Own loops get the ensemble itself: no ART estimator is built for them.
    built = []
    real = robusthyper.ensemble.art_classifier
    monkeypatch.setattr(
        robusthyper.ensemble, "art_classifier", lambda *a, **k: built.append(1) or real(*a, **k)
    )
    attack = build_attack(det, spec, SHAPE, 10)
    assert bool(built) == (not fam.has(Trait.OWN_LOOP))
    assert isinstance(attack, ArtAdapter) == (not fam.has(Trait.OWN_LOOP))
    if fam.has(Trait.OWN_LOOP):
        assert isinstance(attack.ensemble, StochasticEnsemble)  # type: ignore[attr-defined]


def test_square_l2_is_reproducible_from_the_seed(det, small_mnist) -> None:
    """ART's SquareAttack draws its L2 steps from Python's `random` (square_attack.py `random.random() >
    0.5`): the evaluation seeds it with numpy's, so a seed gives the same rows every time."""
    from robusthyper.evaluate import run
    from robusthyper.loading import ModelUnderTest

    spec = _contract_spec("square", Norm.L2)
    model = [ModelUnderTest("det", det, kind="det")]
    runs = [run(model, [spec], small_mnist.test, dataset="mnist5k", n=16, progress=False) for _ in range(2)]
    adv = [r.results.query("input == 'adversarial' and metric != 'seconds'")["value"] for r in runs]
    pd.testing.assert_series_equal(adv[0], adv[1])
    pd.testing.assert_frame_equal(runs[0].examples, runs[1].examples)


def test_registry_lookup_and_label_rule() -> None:
    assert family(" PGD ") is FAMILIES["pgd"]
    with pytest.raises(ConfigError) as info:
        family("cw")
    assert str(info.value).startswith("unknown attack 'cw'; known: fgsm, pgd") and "\n" not in str(info.value)
    assert [family_of_label(x) for x in ("pgd-40", "apgd-ce-100", "fgsm", "paper-bbh-fgsm", "square-1000",
                                         "pgd-adaptive-20", "worst-case", "old-attack-3")] == [
        "pgd", "apgd-ce", "fgsm", "paper-bbh-fgsm", "square", "pgd-adaptive", "worst-case", "old-attack"]  # fmt: skip
    with pytest.raises(ValueError, match="already registered"):
        register(FAMILIES["pgd"])


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"name": "bim-10"}, "not ending in '-<digits>'"),
        ({"name": "Bim"}, "lower-case"),
        ({"traits": frozenset({Trait.SINGLE_STEP})}, "single-step family takes 1 step"),
        ({"protocol": "paper-x"}, "paper protocol"),
        ({"build": lambda ensemble, spec, batch_size: None}, "not both"),
        ({"traits": frozenset({Trait.ITERATIVE, Trait.OWN_LOOP})}, "OWN_LOOP goes with `build`"),
        ({"loss": None}, "declares the loss"),
        ({"norms": ()}, "at least one norm"),
        ({"step_factor": 0.0}, "step_factor"),
        ({"summary": "two\nlines"}, "one non-empty line"),
    ],
)
def test_contradictory_declarations_are_refused(changes: dict, fragment: str) -> None:
    values = {**_BIM_VALUES, **changes}
    with pytest.raises(ValueError, match="attack family") as info:
        AttackFamily(**values)
    assert fragment in str(info.value)


# ---------------------------------------------------------------- generated docs and a cheap --help


def test_readme_holds_the_generated_attack_table() -> None:
    text = README.read_text(encoding="utf-8")
    assert table_in(text) == markdown_table(), (
        "README.md's attack table is not the registry's: run `robusthyper attacks --write README.md`"
    )
    assert with_table(text) == text
    for name in FAMILIES:
        assert f"| `{name}` |" in markdown_table()


def _attack_help() -> str:
    """`robusthyper attack --help` of a freshly built app, with rich's line wrapping undone."""
    result = runner.invoke(create_app(), ["attack", "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


def test_help_lists_every_family_without_importing_torch() -> None:
    text = _attack_help()
    for name, fam in FAMILIES.items():
        assert f"{name}: {fam.summary}" in text
    assert "family listed above, or a preset" in text
    code = (
        "import sys; from robusthyper.cli import create_app; create_app(); import robusthyper.attacks as a; "
        "a.markdown_table(); print(sorted(m for m in ('torch', 'numpy', 'pandas', 'art', 'pydantic') "
        "if m in sys.modules and m != 'pydantic'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "robusthyper", "attack", "--help"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "numpy", "pandas", "art"}
    assert "paper-bbh-fgsm:" in done.stdout


# ---------------------------------------------------------------- a new family: one declaration, one line


def _bim(estimator: ArtEstimator, spec: AttackSpec, batch_size: int) -> ArtAttack:
    from art.attacks.evasion import BasicIterativeMethod

    return BasicIterativeMethod(estimator, eps=spec.eps, eps_step=spec.step, max_iter=spec.steps,
                                batch_size=batch_size, verbose=False)  # fmt: skip


_BIM_VALUES = {
    "name": "bim",
    "summary": "Basic iterative method (Kurakin et al. 2017): FGSM steps of eps/10, clipped to the ball, from x.",
    "steps": 10,
    "step_factor": 0.1,
    "random_init": False,
    "traits": frozenset({Trait.ITERATIVE}),
    "norms": (Norm.LINF,),
    "art_attack": _bim,
    "loss": cross_entropy,
}
BIM = AttackFamily(**_BIM_VALUES)


def test_a_new_family_is_one_declaration_and_one_line(det, batch) -> None:
    weaker_than_fgsm = pd.DataFrame([
        {"model": "m", "attack": attack, "norm": "linf", "eps": 0.1, "eot": "bma", "k_attack": 20, "k_eval": 100,
         "seed": 0, "restarts": 1, "n": 1000, "input": "adversarial", "metric": "accuracy", "value": acc}
        for attack, acc in (("fgsm", 0.10), ("bim-10", 0.30))
    ])  # fmt: skip
    assert "bim" not in FAMILIES and sanity.flags(weaker_than_fgsm) == []  # unknown: not checked
    with registered(BIM):
        # Its defaults and rules, from the declaration.
        spec = make_spec(attack="bim", eps=0.1)
        assert (spec.steps, spec.step_size, spec.random_init, spec.label) == (
            10,
            pytest.approx(0.01),
            False,
            "bim-10",
        )
        assert spec.settings()["attack"] == "bim" and family_of_label(spec.label) == "bim"
        with pytest.raises(ConfigError, match="bim supports norm = linf only"):
            make_spec(attack="bim", eps=0.1, norm="l2")
        # The command line takes it and lists it.
        from robusthyper.cli.attack import _specs

        assert [s.label for s in _specs(["bim"], ["0.1"], None, None, {"steps": 5})] == ["bim-5"]
        assert f"bim: {BIM.summary} [10 steps of eps/10; linf]" in _attack_help()
        assert "| `bim` |" in markdown_table()
        # The sanity flags check it as the iterative attack it declares itself to be.
        found = sanity.flags(weaker_than_fgsm)
        assert [(f.code, f.attack) for f in found] == [("iterative-weaker-than-fgsm", "bim-10")]
        # And it runs, through the shared ART adapter, under the same contract as every other family.
        x, y = batch
        x_adv = check_contract(det, spec, x, y)
        assert _accuracy(det, x_adv, y) < _accuracy(det, x, y) - 0.1
    assert "bim" not in FAMILIES
    with pytest.raises(ConfigError, match="unknown attack 'bim'"):
        make_spec(attack="bim", eps=0.1)
    assert "bim:" not in _attack_help()


def test_sanity_reads_a_family_column() -> None:
    """A results table may carry each row's family; sanity then trusts it over the label."""
    rows = pd.DataFrame([
        {"model": "m", "attack": attack, "family": fam, "norm": "linf", "eps": 0.1, "n": 1000,
         "input": "adversarial", "metric": "accuracy", "value": acc}
        for attack, fam, acc in (("fgsm", "fgsm", 0.1), ("my-pgd", "pgd", 0.3))
    ])  # fmt: skip
    assert [f.code for f in sanity.flags(rows)] == ["iterative-weaker-than-fgsm"]
    assert sanity.flags(rows.drop(columns="family")) == []


def test_cli_attacks_prints_and_writes_the_table(tmp_path) -> None:
    from typer.testing import CliRunner

    from robusthyper.attacks.registry import TABLE_BEGIN, TABLE_END
    from robusthyper.cli import create_app

    runner = CliRunner()
    shown = runner.invoke(create_app(), ["attacks"])
    assert shown.exit_code == 0 and shown.output == markdown_table()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{TABLE_BEGIN}\nold\n{TABLE_END}\noutro\n")
    wrote = runner.invoke(create_app(), ["attacks", "--write", str(readme)])
    assert wrote.exit_code == 0 and table_in(readme.read_text()) == markdown_table()
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("outro\n")
    readme.write_text("no markers\n")
    bad = runner.invoke(create_app(), ["attacks", "--write", str(readme)])
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "no attack table markers" in lines[0]
    assert readme.read_text() == "no markers\n"
