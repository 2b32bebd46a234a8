"""Checkpoint store: atomic writes, resolution by recipe name, and every way a checkpoint can be bad."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import tiny_posterior, tiny_recipe

from robusthyper import store
from robusthyper.errors import CheckpointError, UserError


@pytest.fixture()
def saved(tmp_path):
    posterior = tiny_posterior("bbb")
    path = store.save(posterior, tiny_recipe("bbb"), {"test_accuracy": 0.9}, tmp_path)
    return tmp_path, path


def test_save_writes_weights_and_meta_and_nothing_partial(saved) -> None:
    root, path = saved
    assert sorted(p.name for p in path.iterdir()) == [store.META, store.WEIGHTS]
    meta = json.loads((path / store.META).read_text())
    assert (
        meta["recipe"]["name"] == "tiny-bbb" and meta["posterior"] == "bbb" and meta["dataset"] == "mnist5k"
    )
    assert meta["metrics"]["test_accuracy"] == 0.9 and "torch" in meta["versions"]
    assert not [p for p in (root / "tiny-bbb").iterdir() if p.name.startswith(".")]


def test_recipe_name_resolves_to_the_latest_checkpoint(saved) -> None:
    root, first = saved
    second = store.save(tiny_posterior("bbb", seed=1), tiny_recipe("bbb"), {}, root)
    assert store.resolve("tiny-bbb", root) == second != first
    assert store.resolve(first / store.WEIGHTS, root) == first
    assert store.resolve(root / "tiny-bbb", root) == second
    rows = store.list_checkpoints(root)
    assert [r["path"] for r in rows] == [str(first), str(second)]


def test_missing_checkpoint_says_how_to_train(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="robusthyper train bbb"):
        store.load("bbb", tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        store.load(tmp_path / "nowhere" / "x.safetensors", tmp_path)


def test_truncated_weights_are_rejected(saved) -> None:
    _, path = saved
    weights = path / store.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        store.load(path)


def test_corrupt_weights_with_a_matching_hash_are_rejected(saved) -> None:
    _, path = saved
    (path / store.WEIGHTS).write_bytes(b"not a safetensors file")
    meta = json.loads((path / store.META).read_text())
    meta["weights_sha256"] = store._sha256(path / store.WEIGHTS)
    (path / store.META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="cannot be read"):
        store.load(path)


@pytest.mark.parametrize("content", ["{not json", "[]", json.dumps({"format_version": 99})])
def test_corrupt_or_foreign_metadata_is_rejected(saved, content: str) -> None:
    _, path = saved
    (path / store.META).write_text(content)
    with pytest.raises(CheckpointError, match="retrain"):
        store.load(path)


def test_checkpoint_of_another_architecture_is_rejected(saved) -> None:
    _, path = saved
    meta = json.loads((path / store.META).read_text())
    meta["recipe"]["net"]["widths"] = [64]
    (path / store.META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="another architecture"):
        store.load(path)


def test_non_writable_store_is_a_user_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="not writable.*--store"):
        store.save(tiny_posterior("det"), tiny_recipe("det"), {}, blocker / "store")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_store_is_a_user_error(tmp_path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(UserError, match="not writable"):
        store.save(tiny_posterior("det"), tiny_recipe("det"), {}, ro)


def test_loaded_checkpoint_never_unpickles(saved, monkeypatch) -> None:
    """Loading goes through safetensors and JSON only: torch.load (pickle) is never called."""
    _, path = saved

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load must not be used for checkpoints")

    monkeypatch.setattr(torch, "load", refuse)
    assert store.load(path).posterior.kind == "bbb"
