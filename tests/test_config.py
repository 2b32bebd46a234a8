"""Recipes: every shipped recipe validates; typos and bad values are named, one line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from robusthyper.config import available_recipes, load_recipe
from robusthyper.errors import ConfigError, UserError

BASE = """
dataset = "mnist5k"
[net]
arch = "lenet5"
[posterior]
kind = "bbb"
[train]
epochs = 2
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return str(path)


def test_shipped_recipes_validate() -> None:
    names = available_recipes()
    assert {"det", "mcd", "bbb"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.posterior_kind in name


def test_recipe_from_a_path(tmp_path) -> None:
    recipe = load_recipe(write(tmp_path, BASE))
    assert recipe.name == "r" and recipe.train.epochs == 2 and recipe.train.batch_size == 128


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "epochz = 3\n", r"unknown key 'train.epochz'"),
        (BASE.replace('arch = "lenet5"', 'arch = "resnet"'), r"key 'net.arch' = 'resnet'"),
        (BASE.replace("epochs = 2", 'epochs = "2"'), r"key 'train.epochs' = '2'"),
        (BASE.replace("epochs = 2", "epochs = -1"), r"key 'train.epochs' = -1"),
        (
            BASE.replace('kind = "bbb"', 'kind = "bbb"\nprior_sigma = -1.0'),
            r"\[posterior\] 'prior_sigma' = -1.0",
        ),
        (BASE.replace('kind = "bbb"', 'kind = "bbb"\np = 0.5'), r"unknown key 'p' for posterior 'bbb'"),
        (BASE.replace('kind = "bbb"', 'kind = "vae"'), r"unknown posterior kind 'vae'"),
        (BASE.replace('kind = "bbb"', ""), r"needs a 'kind'"),
        ("seed = 0\n", r"required key 'posterior' is missing"),
        (BASE + "[[oops", r"malformed TOML"),
    ],
)
def test_bad_recipes_are_named_on_one_line(tmp_path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_recipe(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_unknown_recipe_name_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match=r"unknown recipe 'nope'; known recipes: .*bbb.*det"):
        load_recipe("nope")
    with pytest.raises(UserError, match="does not exist"):
        load_recipe("nowhere/nope.toml")


def test_a_users_own_recipe_wins_over_the_built_in_one(tmp_path, monkeypatch) -> None:
    """./defenses/<name>.toml first, then the built-in recipes, from any working directory."""
    monkeypatch.chdir(tmp_path)
    assert load_recipe("det").train.epochs != 7  # built-in, though the cwd is no checkout
    (tmp_path / "defenses").mkdir()
    (tmp_path / "defenses" / "det.toml").write_text(BASE.replace("epochs = 2", "epochs = 7"))
    (tmp_path / "defenses" / "mine.toml").write_text(BASE)
    assert load_recipe("det").train.epochs == 7
    assert load_recipe("mcd").posterior_kind == "mcd"
    assert {"det", "mcd", "mine"} <= set(available_recipes())


def test_unknown_dataset_in_a_recipe_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"\[dataset\] unknown dataset 'imagenet': choose one of mnist5k"):
        load_recipe(write(tmp_path, BASE.replace('"mnist5k"', '"imagenet"')))
