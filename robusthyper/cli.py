"""The `robusthyper` command line: thin typer commands over library functions.

Only typer and the standard library are imported at module level; torch, ART and pandas are imported inside
the commands, so `robusthyper --help` answers at once. A `UserError` ends in one line on stderr and exit 2.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from robusthyper.errors import UserError

app = typer.Typer(
    help="Honest adversarial-robustness and uncertainty evaluation of Bayesian neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Datasets: where they load from and whether they are available.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

F = TypeVar("F", bound=Callable[..., Any])

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store", help="Model store folder (default: ./models, or $ROBUSTHYPER_STORE).", show_default=False
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder with torchvision datasets (default: ./data, or $ROBUSTHYPER_DATA_DIR).",
        show_default=False,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, or auto (cuda when available).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log lines.")]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def user_errors(fn: F) -> F:
    """Turn a `UserError` into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            _fail(str(err))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device '{device}' is not one of cpu, cuda, auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available; use --device cpu or auto")
    return device


def _setup_logging(quiet: bool) -> None:
    """Per-epoch log lines for logs (CI, files); on a terminal the progress bar shows the same figures."""
    verbose = not quiet and not sys.stderr.isatty()
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr
    )


@app.command()
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
    from robusthyper.train import fit

    _setup_logging(quiet)
    recipe_obj = load_recipe(recipe)
    overrides: dict[str, Any] = {}
    if seed is not None:
        overrides["seed"] = seed
    if epochs is not None:
        overrides["train"] = recipe_obj.train.model_copy(update={"epochs": epochs})
    recipe_obj = recipe_obj.model_copy(update=overrides)
    store_dir = model_store.ensure_writable(
        Path(store or model_store.default_store())
    )  # fail before training
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


@app.command()
@user_errors
def models(store: StoreOpt = None) -> None:
    """List the checkpoints in the model store, newest last per recipe."""
    from robusthyper.store import default_store, list_checkpoints

    rows = list_checkpoints(store)
    if not rows:
        typer.echo(f"no checkpoints in '{store or default_store()}'; train one with `robusthyper train det`")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("recipe", "posterior", "dataset", "test acc", "train s", "created", "path")
    for r in rows:
        if "error" in r:
            table.add_row(r["recipe"], "-", "-", "-", "-", "-", f"{r['path']} ({r['error']})")
            continue
        acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        secs = f"{r['train_seconds']:.1f}" if r["train_seconds"] is not None else "-"
        table.add_row(
            r["recipe"], str(r["posterior"]), str(r["dataset"]), acc, secs, str(r["created"]), r["path"]
        )
    Console(width=200).print(table)


@data_app.command("list")
@user_errors
def data_list(data_dir: DataDirOpt = None) -> None:
    """Print each dataset, where it would load from, and whether it is available."""
    from rich.console import Console
    from rich.table import Table

    from robusthyper.data import describe_datasets

    table = Table("dataset", "available", "source", "how to get it")
    for row in describe_datasets(data_dir):
        table.add_row(
            row["name"], "yes" if row["available"] else "no", str(row["source"]), row.get("note") or ""
        )
    Console(width=200).print(table)


@app.command()
@user_errors
def attack(
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="A recipe name (its latest checkpoint in the store), a checkpoint folder, or "
            "module:factory returning a Posterior or a stochastic nn.Module. Repeatable.",
        ),
    ],
    attack_name: Annotated[
        list[str] | None,
        typer.Option(
            "--attack",
            "-a",
            help="fgsm, pgd, apgd-ce, apgd-dlr, square, or a preset (attacks/<name>.toml or a path). "
            "Repeatable; several attacks also give the worst case per example. Default: pgd.",
            show_default=False,
        ),
    ] = None,
    eps: Annotated[
        list[str] | None,
        typer.Option("--eps", help="Perturbation budget, e.g. 0.1 or 8/255. Repeatable.", show_default=False),
    ] = None,
    norm: Annotated[
        str | None, typer.Option("--norm", help="linf (default) or l2.", show_default=False)
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps", help="Iterations (queries for square); default per attack.", show_default=False
        ),
    ] = None,
    step_size: Annotated[
        float | None,
        typer.Option(
            "--step-size", help="Step size; default eps/4 for pgd, 2 eps for apgd.", show_default=False
        ),
    ] = None,
    restarts: Annotated[
        int | None, typer.Option("--restarts", help="Independent runs; worst case kept.", show_default=False)
    ] = None,
    random_init: Annotated[
        bool | None,
        typer.Option(
            "--random-init/--no-random-init", help="Random start in the eps-ball.", show_default=False
        ),
    ] = None,
    eot: Annotated[
        list[str] | None,
        typer.Option(
            "--eot", help="EOT estimator: bma (default) or mean-loss. Repeatable.", show_default=False
        ),
    ] = None,
    k_attack: Annotated[
        list[int] | None,
        typer.Option(
            "--k-attack",
            help="Posterior samples per attack step (default 20). Repeatable: one run per value.",
            show_default=False,
        ),
    ] = None,
    k_eval: Annotated[
        int | None,
        typer.Option("--k-eval", help="Posterior samples for evaluation (default 100).", show_default=False),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the run (default 0).", show_default=False)
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Test examples evaluated (the first n).")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per attack batch.")] = 128,
    device: DeviceOpt = "auto",
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="Dataset for module:factory models (default mnist5k); checkpoints use their own.",
            show_default=False,
        ),
    ] = None,
    train_missing: Annotated[
        bool, typer.Option("--train", help="Train a recipe whose checkpoint is missing, then attack it.")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for reports/<run-id>/.")] = Path("reports"),
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Report folder name (default: a UTC timestamp).", show_default=False),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Attack models with EOT and print clean and robust accuracy, NLL, entropy and mutual information."""
    import time

    from robusthyper.attacks import AttackName, expand, load_preset
    from robusthyper.attacks.presets import is_preset_ref
    from robusthyper.attacks.spec import applicable
    from robusthyper.errors import CheckpointError
    from robusthyper.evaluate import train_and_load

    _setup_logging(quiet)
    logging.getLogger("art").setLevel(logging.WARNING)  # ART logs every batch's success rate at INFO
    started = time.perf_counter()
    # 1. Specs (cheap, and bad input must fail before anything is loaded or written).
    flags = {"norm": norm, "steps": steps, "step_size": step_size, "restarts": restarts,
             "random_init": random_init, "k_eval": k_eval, "seed": seed}  # fmt: skip
    common: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    if eps:
        common["eps"] = list(eps)
    specs = []
    known = [a.value for a in AttackName]
    for ref in attack_name or ["pgd"]:
        if ref.lower() not in known and not is_preset_ref(ref):
            from robusthyper.attacks import available_presets

            raise UserError(
                f"unknown attack '{ref}'; known: {', '.join(known)}; presets: {', '.join(available_presets())}"
            )
        for k_value in k_attack or [None]:
            for eot_value in eot or [None]:
                extra = {"k_attack": k_value, "eot": eot_value}
                overrides = {**common, **{k: v for k, v in extra.items() if v is not None}}
                if ref.lower() in known:
                    specs += expand({"attack": ref.lower(), **applicable(ref, overrides)}, "command line")
                else:
                    specs += load_preset(ref, overrides)
    if n <= 0:
        raise UserError(f"--n {n} must be positive")
    if batch_size <= 0:
        raise UserError(f"--batch-size {batch_size} must be positive")
    device_name = resolve_device(device)

    # 2. Models and data.
    import torch

    from robusthyper import store as model_store
    from robusthyper.data import dataset_info, load_dataset
    from robusthyper.evaluate import ModelUnderTest, is_factory_ref, load_factory, run, summary
    from robusthyper.results import write_report

    models: list[ModelUnderTest] = []
    factories: list[str] = []
    datasets: set[str] = set()
    meta_models = []
    for ref in model:
        if is_factory_ref(ref):
            factories.append(ref)
            continue
        try:
            ckpt = model_store.load(ref, store, device_name)
        except CheckpointError:
            if not (train_missing and "/" not in ref and not Path(ref).exists()):
                raise
            ckpt = train_and_load(ref, store, data_dir, device_name, quiet)
        datasets.add(str(ckpt.meta["dataset"]))
        name = str(ckpt.meta.get("recipe", {}).get("name", ref)) if Path(ref).exists() else ref
        models.append(
            ModelUnderTest(name, ckpt.posterior, str(ckpt.path), str(ckpt.meta.get("posterior", "")))
        )
        meta_models.append({"name": models[-1].name, "checkpoint": str(ckpt.path),
                            "posterior": ckpt.meta.get("posterior"), "recipe": ckpt.meta.get("recipe")})  # fmt: skip
    if factories:
        datasets.add(dataset or (next(iter(datasets)) if datasets else "mnist5k"))
    if len(datasets) > 1:
        raise UserError(f"the models were trained on different datasets ({', '.join(sorted(datasets))}); "
                        "attack them in separate runs")  # fmt: skip
    dataset_name = next(iter(datasets))
    info = dataset_info(dataset_name)
    for ref in factories:
        models.append(load_factory(ref, tuple(info.input_shape), device_name))
        meta_models.append({"name": models[-1].name, "factory": ref, "posterior": models[-1].kind})
    data = load_dataset(dataset_name, data_dir)
    if n > len(data.test):
        raise UserError(f"--n {n} is larger than the {dataset_name} test set ({len(data.test)} examples)")
    from robusthyper.results import writable_root

    if run_id is not None and (out / run_id).exists():
        raise UserError(f"report folder '{out / run_id}' already exists; pass another --run-id")
    writable_root(out)  # fail before the long run, not after it

    # 3. Run, write, print.
    torch.manual_seed(specs[0].seed)
    evaluation = run(models, specs, data.test, dataset=dataset_name, n=n, batch_size=batch_size,
                     progress=False if quiet else None)  # fmt: skip
    seconds = time.perf_counter() - started
    meta = {"command": "attack", "argv": sys.argv[1:], "device": device_name,
            "device_name": torch.cuda.get_device_name() if device_name == "cuda" else "cpu",
            "torch_threads": torch.get_num_threads(), "seconds": seconds, "models": meta_models,
            "data_source": data.source, **evaluation.settings}  # fmt: skip
    folder = write_report(evaluation.results, meta, out, run_id, evaluation.examples)
    if not quiet:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{dataset_name}, n={n}")
        wide = summary(evaluation.results)
        for column in wide.columns:
            table.add_column(
                column, justify="left" if column in ("model", "attack", "norm", "eot") else "right"
            )
        for row in wide.itertuples(index=False):
            table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
        Console(width=220).print(table)
    typer.echo(f"wrote {folder} in {seconds:.1f} s")


@app.command()
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run folder, e.g. reports/<run-id>.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Path of the page, or a folder for <folder>/index.html (default: in the "
            "run folder). Figures go to figures/ beside it.",
            show_default=False,
        ),
    ] = None,
    title: Annotated[
        str | None, typer.Option("--title", help="Page title (default: the run id).", show_default=False)
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Write a run's self-contained HTML report (plots of accuracy and uncertainty vs eps) and print its path."""
    from robusthyper.report import build

    _setup_logging(quiet)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    typer.echo(str(build(run_dir, out, title=title)))


@app.command()
@user_errors
def gate(
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            "-p",
            help="Policy TOML (rules, and an \\[evaluate] section). Default: the \\[tool.robusthyper.gate] "
            "table of ./pyproject.toml, else ./robustness.toml.",
            show_default=False,
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            "--results",
            help="Check this finished run folder (or results .csv/.parquet) instead of evaluating.",
            show_default=False,
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="Run folder or results file to compare with (max_drop and max_rise rules).",
            show_default=False,
        ),
    ] = None,
    junit_xml: Annotated[
        Path | None,
        typer.Option(
            "--junit-xml", help="Write a JUnit XML report here (one test case per rule).", show_default=False
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verdict as JSON on stdout instead of a table.")
    ] = False,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="Run folder for the gate's own evaluation (default: <out>/gate-<fingerprint>); finished "
            "cells are reused on a re-run.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the default run folder.")] = Path("reports"),
    report: Annotated[
        bool,
        typer.Option(
            "--report/--no-report", help="Build the run's HTML report (index.html) after evaluating."
        ),
    ] = True,
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Check robustness and uncertainty rules for CI: exit 0 when all pass, 1 when one fails, 2 on bad input."""
    from robusthyper.gate import run_gate
    from robusthyper.gate.output import check_writable, print_table, to_json, write_atomic

    _setup_logging(quiet)
    logging.getLogger("art").setLevel(logging.WARNING)
    if junit_xml is not None:
        check_writable(junit_xml)  # fail before a long evaluation, not after it
    device_name = resolve_device(device) if results is None else "cpu"
    done = run_gate(policy, results=results, baseline=baseline, run_dir=run_dir, out=out, store=store,
                    data_dir=data_dir, device=device_name, quiet=quiet or as_json, report=report)  # fmt: skip
    if junit_xml is not None:
        from robusthyper.gate.output import junit_xml as render_junit

        write_atomic(junit_xml, render_junit(done.checked, done.policy_source, done.seconds))
    failed = [r for r in done.checked if not r.passed]
    if as_json:
        typer.echo(to_json(done.checked, {"policy": done.policy_source, "run": str(done.results_source),
                                          "computed": done.computed, "reused": done.reused,
                                          "report": None if done.page is None else str(done.page)}))  # fmt: skip
    else:
        if not quiet:
            print_table(done.checked, title=f"robusthyper gate: {done.policy_source}")
        cells = "" if done.computed is None else f"; {done.computed} cells computed, {done.reused} reused"
        typer.echo(f"{len(done.checked) - len(failed)}/{len(done.checked)} rules pass "
                   f"({done.results_source}{cells})")  # fmt: skip
        if done.page is not None:
            typer.echo(f"report: {done.page}")
        for r in failed:
            typer.echo(f"FAIL {r.name}: {r.message()}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def sweep(
    suite: Annotated[
        str, typer.Argument(help="Suite: attacks/<name>.toml by name (quick, standard) or a path to a TOML.")
    ],
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="A recipe name (its latest checkpoint in the store), a checkpoint folder, or "
            "module:factory. Repeatable.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Run folder (created; an existing sweep folder is resumed). Default: reports/<run-id>.",
            show_default=False,
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="Run folder name under reports/ (default: the suite's name, so re-running resumes).",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="Reuse the cells the run folder already records under the same settings. --no-resume on "
            "a folder with cells stops unless --overwrite.",
        ),
    ] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Discard the cells the run folder records and start over.")
    ] = False,
    n: Annotated[
        int | None,
        typer.Option(
            "--n", help="Test examples (the first n); default: the suite's n, else 1000.", show_default=False
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help="Seed of every attack (default: the suite's, else 0).", show_default=False
        ),
    ] = None,
    ood: Annotated[
        bool,
        typer.Option(
            "--ood/--no-ood", help="Also measure OOD detection AUROC (noise, Fashion-MNIST, CIFAR-5)."
        ),
    ] = True,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per attack batch.")] = 128,
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="Dataset for module:factory models (default mnist5k); checkpoints use their own.",
            show_default=False,
        ),
    ] = None,
    train_missing: Annotated[
        bool, typer.Option("--train", help="Train a recipe whose checkpoint is missing, then sweep it.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run every model under every attack and eps of a suite into one run folder, recording each finished
    cell (a killed sweep resumes where it stopped), then write the HTML report and print its path."""
    from robusthyper.results import DEFAULT_REPORTS
    from robusthyper.sweep import load_suite, run_sweep

    _setup_logging(quiet)
    logging.getLogger("art").setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    if out is not None and run_id is not None:
        raise UserError("pass --out DIR or --run-id ID, not both")
    if n is not None and n <= 0:
        raise UserError(f"--n {n} must be positive")
    loaded = load_suite(suite, {} if seed is None else {"seed": seed})
    run_dir = out if out is not None else Path(DEFAULT_REPORTS) / (run_id or loaded.path.stem)
    extra = {"argv": sys.argv[1:], "suite": str(loaded.path)}
    done = run_sweep(run_dir, model, loaded.specs, dataset=dataset, store=store, data_dir=data_dir,
                     n=n or loaded.n or 1000, batch_size=batch_size, device=resolve_device(device),
                     resume=resume, progress=False if quiet else None, ood=ood, overwrite=overwrite,
                     train_missing=train_missing, meta=extra)  # fmt: skip
    typer.echo(f"{done.computed} cells computed, {done.reused} reused -> {done.run_dir}")
    typer.echo(str(done.report))


def main() -> None:
    app()
