"""Models from the command line: the one loader behind `robusthyper attack`, `sweep` and `gate`.

A reference is a recipe name (its latest checkpoint in the store; with `train_missing`, trained first when
there is none), a checkpoint folder, or `package.module:factory` (`robusthyper.evaluate.load_factory`). All
models of one run must share a dataset (checkpoints carry theirs; factories take `dataset`, else the
checkpoints', else mnist5k), and their names must be unique because they label the result rows.

Each loaded model comes with the identity of its weights (the checkpoint's sha256, or a hash of a factory
model's state): the sweep keys its recorded cells by it, so a retrained model is never confused with the
old one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robusthyper.errors import UserError

if TYPE_CHECKING:
    import torch

    from robusthyper.evaluate import ModelUnderTest

DEFAULT_DATASET = "mnist5k"


@dataclass
class LoadedModels:
    """What `load_models` returns: the models in the order given, on the requested device."""

    models: list[ModelUnderTest]
    ids: dict[str, str]
    """Model name -> identity of its weights ('sha256:<checkpoint hash>' or 'state:<hash of the state>')."""
    dataset: str
    meta: list[dict[str, Any]]
    """One JSON-ready entry per model for meta.json: name, checkpoint or factory, posterior, recipe."""


def state_hash(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes and bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def result_name(ref: str) -> str | None:
    """The name a model will get in the results, when it can be told without loading it: a recipe name is
    its own name, a factory is named after its function; a checkpoint folder only once loaded (None)."""
    from robusthyper.evaluate import is_factory_ref

    if is_factory_ref(ref):
        return ref.partition(":")[2]
    return ref if "/" not in ref and not Path(ref).exists() else None


def load_models(
    refs: Sequence[str],
    *,
    store: Path | None = None,
    data_dir: Path | None = None,
    device: str = "cpu",
    dataset: str | None = None,
    train_missing: bool = False,
    quiet: bool = True,
) -> LoadedModels:
    """Load every reference of `refs` (see the module docstring) onto `device`.

    `dataset` applies to factories only. `train_missing`: a recipe name without a checkpoint is trained
    (and saved into `store`) first; otherwise the missing checkpoint is a `CheckpointError` that says how to
    train it. Mixed datasets and duplicate names are one-line `UserError`s.
    """
    from robusthyper import store as model_store
    from robusthyper.data import dataset_info
    from robusthyper.errors import CheckpointError
    from robusthyper.evaluate import ModelUnderTest, is_factory_ref, load_factory, train_and_load

    if not refs:
        raise UserError("no model to evaluate; pass --model NAME")
    models: list[ModelUnderTest] = []
    ids: dict[str, str] = {}
    meta: list[dict[str, Any]] = []
    datasets: set[str] = set()
    factories: list[str] = []
    for ref in refs:
        if is_factory_ref(ref):
            factories.append(ref)
            continue
        try:
            ckpt = model_store.load(ref, store, device)
        except CheckpointError:
            if not (train_missing and "/" not in ref and not Path(ref).exists()):
                raise
            ckpt = train_and_load(ref, store, data_dir, device, quiet)
        datasets.add(str(ckpt.meta["dataset"]))
        name = str(ckpt.meta.get("recipe", {}).get("name", ref)) if Path(ref).exists() else ref
        kind = str(ckpt.meta.get("posterior", ""))
        models.append(ModelUnderTest(name, ckpt.posterior, str(ckpt.path), kind))
        ids[name] = f"sha256:{ckpt.meta.get('weights_sha256') or state_hash(ckpt.posterior)}"
        meta.append(
            {
                "name": name,
                "checkpoint": str(ckpt.path),
                "posterior": ckpt.meta.get("posterior"),
                "weights_sha256": ckpt.meta.get("weights_sha256"),
                "recipe": ckpt.meta.get("recipe"),
            }
        )
    if factories:
        datasets.add(dataset or (next(iter(datasets)) if datasets else DEFAULT_DATASET))
    if len(datasets) > 1:
        raise UserError(f"the models were trained on different datasets ({', '.join(sorted(datasets))}); "
                        "evaluate them in separate runs")  # fmt: skip
    dataset_name = next(iter(datasets))
    for ref in factories:
        model = load_factory(ref, tuple(dataset_info(dataset_name).input_shape), device)
        models.append(model)
        ids[model.name] = f"state:{state_hash(model.posterior)}"
        meta.append({"name": model.name, "factory": ref, "posterior": model.kind})
    names = [m.name for m in models]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise UserError(
            f"two models are named {duplicated[0]!r}; pass each model once (names label the rows)"
        )
    return LoadedModels(models, ids, dataset_name, meta)


__all__ = ["LoadedModels", "load_models", "result_name", "state_hash"]
