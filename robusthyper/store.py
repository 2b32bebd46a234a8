"""Checkpoint store: safetensors weights plus JSON metadata, one folder per checkpoint.

Layout: `<store>/<recipe>/<UTC timestamp>/{weights.safetensors, meta.json}`. A folder is written under a
temporary name and renamed when complete, so a crash never leaves a half-written checkpoint that looks valid.
Nothing is ever unpickled: weights are safetensors, metadata is JSON, and the architecture is rebuilt from the
recipe in the metadata, then checked parameter by parameter against the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import robusthyper
from robusthyper.config import Recipe
from robusthyper.data import dataset_info
from robusthyper.errors import CheckpointError
from robusthyper.files import ensure_writable
from robusthyper.posteriors import Posterior, build_posterior

FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
META = "meta.json"
DEFAULT_STORE = "models"
STORE_HINT = "pass --store DIR with a writable folder for the model store"
"""The fix named when the store is not writable (`robusthyper.files.ensure_writable`)."""


def default_store() -> Path:
    return Path(os.environ.get("ROBUSTHYPER_STORE", DEFAULT_STORE))


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the posterior (on CPU unless asked otherwise), its metadata and its folder."""

    posterior: Posterior
    meta: dict[str, Any]
    path: Path

    @property
    def recipe(self) -> Recipe:
        return Recipe.model_validate(self.meta["recipe"])


def _versions() -> dict[str, str]:
    return {
        "robusthyper": robusthyper.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(
    posterior: Posterior,
    recipe: Recipe,
    metrics: dict[str, float],
    store: Path | str | None = None,
    history: list[dict[str, float]] | None = None,
) -> Path:
    """Write a checkpoint atomically and return its folder."""
    recipe_dir = ensure_writable(Path(store or default_store()) / recipe.name, STORE_HINT)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=recipe_dir))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in posterior.state_dict().items()}
        save_file(tensors, tmp / WEIGHTS)
        meta = {
            "format_version": FORMAT_VERSION,
            "recipe": recipe.model_dump(mode="json"),
            "dataset": recipe.dataset,
            "posterior": recipe.posterior_kind,
            "seed": recipe.seed,
            "metrics": metrics,
            "history": history or [],
            "parameter_shapes": {k: list(v.shape) for k, v in tensors.items()},
            "weights_sha256": _sha256(tmp / WEIGHTS),
            "created": stamp,
            "versions": _versions(),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        final = recipe_dir / stamp
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _checkpoints(recipe_dir: Path) -> list[Path]:
    return (
        sorted(p for p in recipe_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if (recipe_dir.is_dir())
        else []
    )


def resolve(ref: str | Path, store: Path | str | None = None) -> Path:
    """A checkpoint folder from a recipe name (its latest checkpoint), a folder, or a weights/meta file."""
    store = Path(store or default_store())
    path = Path(ref)
    if path.exists():
        folder = path.parent if path.is_file() else path
        if not (folder / META).is_file() and _checkpoints(folder):
            folder = _checkpoints(folder)[-1]  # a recipe folder: take its latest
        return folder
    if path.parent == Path(".") and path.suffix == "":
        found = _checkpoints(store / str(ref))
        if found:
            return found[-1]
        raise CheckpointError(
            f"no checkpoint for '{ref}' in model store '{store}'; train one with `robusthyper train {ref}`"
            " (or pass --store DIR)"
        )
    raise CheckpointError(f"checkpoint '{ref}' does not exist; check the path")


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint '{folder}' has no {META}; it is incomplete, retrain it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint '{folder}/{META}' is corrupt ({err}); retrain it") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise CheckpointError(
            f"checkpoint '{folder}' has format version {found!r}, this robusthyper reads {FORMAT_VERSION};"
            " retrain it"
        )
    return meta


def load(ref: str | Path, store: Path | str | None = None, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint (see `resolve`), verifying its hash and its architecture."""
    folder = resolve(ref, store)
    meta = _read_meta(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"checkpoint '{folder}' has no {WEIGHTS}; it is incomplete, retrain it")
    if _sha256(weights) != meta.get("weights_sha256"):
        raise CheckpointError(f"checkpoint '{weights}' is truncated or corrupt (hash mismatch); retrain it")
    try:
        recipe = Recipe.model_validate(meta["recipe"])
        info = dataset_info(recipe.dataset)
    except Exception as err:  # noqa: BLE001 - any invalid metadata is a corrupt checkpoint
        raise CheckpointError(
            f"checkpoint '{folder}/{META}' holds an invalid recipe ({err}); retrain it"
        ) from None
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"checkpoint '{weights}' cannot be read ({err}); retrain it") from None

    torch.manual_seed(0)  # init values are overwritten; seeding only makes the build itself reproducible
    posterior = build_posterior(recipe, info)
    expected = {k: tuple(v.shape) for k, v in posterior.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:3]
        raise CheckpointError(
            f"checkpoint '{folder}' holds another architecture than its recipe builds "
            f"(first differences: {diff}); retrain it with the current recipe"
        )
    posterior.load_state_dict(tensors)
    posterior.eval()
    return Checkpoint(posterior.to(device), meta, folder)


def list_checkpoints(store: Path | str | None = None) -> list[dict[str, Any]]:
    """One row per checkpoint in the store (newest last per recipe); unreadable ones are listed as such."""
    store = Path(store or default_store())
    rows: list[dict[str, Any]] = []
    if not store.is_dir():
        return rows
    for recipe_dir in sorted(p for p in store.iterdir() if p.is_dir()):
        for folder in _checkpoints(recipe_dir):
            try:
                meta = _read_meta(folder)
            except CheckpointError as err:
                rows.append({"recipe": recipe_dir.name, "path": str(folder), "error": str(err)})
                continue
            metrics = meta.get("metrics", {})
            rows.append({
                "recipe": recipe_dir.name,
                "posterior": meta.get("posterior"),
                "dataset": meta.get("dataset"),
                "created": meta.get("created"),
                "test_accuracy": metrics.get("test_accuracy"),
                "train_seconds": metrics.get("train_seconds"),
                "path": str(folder),
            })  # fmt: skip
    return rows
