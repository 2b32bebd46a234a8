"""`robusthyper train`: train a defence from its recipe into the model store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from robusthyper.cli.common import (
    DataDirOpt,
    DeviceOpt,
    QuietOpt,
    StoreOpt,
    resolve_device,
    setup_logging,
    user_errors,
)


@user_errors
def train(
    recipe: Annotated[
        str, typer.Argument(help="Recipe name (defenses/<name>.toml) or path to a recipe TOML.")
    ],
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
    download: Annotated[
        bool, typer.Option("--download", help="Allow torchvision to download the dataset.")
    ] = False,
    device: DeviceOpt = "auto",
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", min=0, help="Override the recipe's number of epochs.", show_default=False),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Override the recipe's seed.", show_default=False)
    ] = None,
    if_missing: Annotated[
        bool,
        typer.Option(
            "--if-missing",
            help="Skip training when the store holds a loadable checkpoint trained from this very recipe.",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a defence from its recipe and save a checkpoint (safetensors + JSON) in the model store."""
    from robusthyper import store as model_store
    from robusthyper.config import load_recipe
    from robusthyper.data import load_dataset
    from robusthyper.files import ensure_writable
    from robusthyper.train import fit

    setup_logging(quiet)
    recipe_obj = load_recipe(recipe)
    overrides: dict[str, Any] = {}
    if seed is not None:
        overrides["seed"] = seed
    if epochs is not None:
        overrides["train"] = recipe_obj.train.model_copy(update={"epochs": epochs})
    recipe_obj = recipe_obj.model_copy(update=overrides)
    # fail now, not after training
    store_dir = ensure_writable(Path(store or model_store.default_store()), model_store.STORE_HINT)
    if if_missing:
        from robusthyper.errors import CheckpointError

        try:
            found = model_store.load(recipe_obj.name, store_dir)
        except CheckpointError:  # none yet, or one this robusthyper cannot load: train
            found = None
        if found is not None and found.recipe == recipe_obj:  # an edited recipe or --epochs/--seed: train
            typer.echo(
                f"{recipe_obj.name}: a checkpoint of this recipe exists (--if-missing) -> {found.path}"
            )
            return
    device_name = resolve_device(device)
    data = load_dataset(recipe_obj.dataset, data_dir, download=download)
    result = fit(recipe_obj, data, device=device_name, progress=False if quiet else None)
    path = model_store.save(result.posterior, recipe_obj, result.metrics, store_dir, result.history)
    m = result.metrics
    typer.echo(
        f"{recipe_obj.name}: test accuracy {m['test_accuracy']:.4f} (K={int(m['eval_samples'])}) "
        f"in {m['train_seconds']:.1f} s -> {path}"
    )
