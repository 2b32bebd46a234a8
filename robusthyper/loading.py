"""Models from the command line: the one loader behind `robusthyper attack`, `sweep` and `gate`.

A reference is a recipe name (its latest checkpoint in the store; with `train_missing`, trained first when
there is none), a checkpoint folder, or `package.module:factory` (`load_factory`; a plain module becomes a
`ModulePosterior`). All models of one run must share a dataset (checkpoints carry theirs; factories take
`dataset`, else the checkpoints', else mnist5k), and their names must be unique because they label the
result rows.

Each loaded model comes with the identity of its weights (the checkpoint's sha256, or a hash of a factory
model's state): the sweep keys its recorded cells by it, so a retrained model is never confused with the
old one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robusthyper.errors import UserError
from robusthyper.files import ensure_writable
from robusthyper.nets import rng_scope
from robusthyper.posteriors.base import Posterior

DEFAULT_DATASET = "mnist5k"


@dataclass(frozen=True)
class ModelUnderTest:
    """A model to evaluate: its display name, posterior (on the run's device) and where it came from."""

    name: str
    posterior: Posterior
    source: str = ""
    kind: str = ""


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
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def result_name(ref: str) -> str | None:
    """The name a model will get in the results, when it can be told without loading it: a recipe name is
    its own name, a factory is named after its function; a checkpoint folder only once loaded (None)."""
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


# --------------------------------------------------------------------------------------------------------
# module:factory references, and recipes trained on demand
# --------------------------------------------------------------------------------------------------------


def is_factory_ref(ref: str) -> bool:
    """`package.module:function` (and not an existing path that happens to hold a colon)."""
    module, sep, attr = ref.partition(":")
    return bool(sep and module and attr and not Path(ref).exists() and "/" not in module)


def load_factory(ref: str, input_shape: tuple[int, ...], device: str | torch.device) -> ModelUnderTest:
    """Call `module:factory()`; it must return a `Posterior` or an `nn.Module` mapping [B, *input_shape] in
    [0, 1] to logits [B, C]. A plain module counts as stochastic when two passes on a probe input differ."""
    import importlib

    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any failure to import is the user's to fix
        raise UserError(
            f"--model '{ref}': cannot import '{module_name}' ({type(err).__name__}: {err})"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"--model '{ref}': '{module_name}' has no callable '{attr}'")
    try:
        obj = factory()
    except Exception as err:  # noqa: BLE001
        raise UserError(f"--model '{ref}': the factory raised {type(err).__name__}: {err}") from None
    if isinstance(obj, Posterior):
        posterior = obj
    elif isinstance(obj, torch.nn.Module):
        obj = obj.to(device)
        probe = torch.rand((2, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)
        try:
            with torch.no_grad():
                a, b = (_probe(obj, probe, seed) for seed in (1, 2))
        except Exception as err:  # noqa: BLE001
            raise UserError(
                f"--model '{ref}': the module fails on inputs of shape [B, {', '.join(map(str, input_shape))}]"
                f" ({type(err).__name__}: {err})"
            ) from None
        if a.ndim != 2 or a.shape[0] != 2:
            raise UserError(f"--model '{ref}': the module must return logits [B, C], got {tuple(a.shape)}")
        posterior = ModulePosterior(obj, stochastic=not torch.equal(a, b))
    else:
        raise UserError(
            f"--model '{ref}': the factory returned {type(obj).__name__}, not a Posterior or torch.nn.Module"
        )
    return ModelUnderTest(attr, posterior.to(device), source=ref, kind=getattr(posterior, "kind", "module"))


def _probe(module: torch.nn.Module, x: torch.Tensor, seed: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return module(x)


def train_and_load(recipe: str, store: Path | None, data_dir: Path | None, device: str, quiet: bool) -> Any:
    """`attack --train`: train a recipe whose checkpoint is missing, save it, and return the loaded checkpoint."""
    from robusthyper import store as model_store
    from robusthyper.config import load_recipe
    from robusthyper.data import load_dataset
    from robusthyper.train import fit

    recipe_obj = load_recipe(recipe)
    store_dir = ensure_writable(Path(store or model_store.default_store()), model_store.STORE_HINT)
    data = load_dataset(recipe_obj.dataset, data_dir)
    result = fit(recipe_obj, data, device=device, progress=False if quiet else None)
    path = model_store.save(result.posterior, recipe_obj, result.metrics, store_dir, result.history)
    return model_store.load(path, store_dir, device)


class ModulePosterior(Posterior):
    """Adapter: a user's own `nn.Module` (`x -> logits [B, C]`) as a posterior whose samples are K forward
    passes. Randomness inside the module (dropout, sampled weights drawn from torch's RNG) comes from the
    ensemble's generator through `rng_scope`. The module's train/eval mode is left as the user set it."""

    kind = "module"

    def __init__(self, module: nn.Module, stochastic: bool = True) -> None:
        super().__init__(module)
        self.stochastic = stochastic  # type: ignore[misc]  # instance override of the class default

    def logits(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        with rng_scope(generator, x.device):
            if not self.stochastic:
                out = self.net(x)
                return out.unsqueeze(0).expand(k, *out.shape)
            return torch.stack([self.net(x) for _ in range(k)])


__all__ = [
    "LoadedModels",
    "ModelUnderTest",
    "ModulePosterior",
    "is_factory_ref",
    "load_factory",
    "load_models",
    "result_name",
    "state_hash",
    "train_and_load",
]
