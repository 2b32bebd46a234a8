"""Evaluation: every (model, attack, eps) on the same n test examples, as a tidy table.

For each model and spec, adversarial examples are crafted batch by batch against the model average with
K_attack samples per step (`robusthyper.attacks`), then clean and adversarial inputs are evaluated with K_eval
fresh samples. Evaluation draws from a generator seeded per (seed, batch), so the clean and adversarial
passes of a batch use the same posterior samples (common random numbers: eps = 0 reproduces the clean
numbers exactly). Robust accuracy counts correct-under-attack over *all* n examples (RobustBench), restarts
and several attacks at the same budget combine per example into the worst case.

Sanity checks: every adversarial input lies within eps of its clean input and, unless the spec is one of the
papers' unclipped protocols (`spec.clip` false), in [0, 1] (else a RuntimeError: a bug). The input gradient
of the attack loss is probed on up to 32 examples first: when it is all zero or holds NaN/inf (a fully masked
or numerically broken model) one warning line says so and the evaluation goes on, so the numbers are still
recorded and the sanity flags (`robusthyper.sanity`: zero-gradients, nonfinite-gradients) mark them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from robusthyper.attacks import AttackSpec, Norm, build_attack
from robusthyper.data import Split
from robusthyper.ensemble import frozen
from robusthyper.errors import UserError
from robusthyper.metrics import log_predictive, mutual_information, nll, predictive_entropy
from robusthyper.posteriors.base import Posterior

log = logging.getLogger(__name__)

NORM_TOLERANCE = 1e-5
"""Slack on ||delta|| <= eps for float32 rounding in the attacks' projections."""
WORST_CASE = "worst-case"
INPUT_METRICS = ("accuracy", "nll", "entropy", "mutual_information")


@dataclass(frozen=True)
class ModelUnderTest:
    """A model to evaluate: its display name, posterior (on the run's device) and where it came from."""

    name: str
    posterior: Posterior
    source: str = ""
    kind: str = ""


@dataclass
class Evaluation:
    """What `run` returns: the tidy table, per-example outcomes and the run's settings."""

    results: pd.DataFrame
    examples: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Outcome:
    """Per-example arrays `[n]` for one input set (clean or adversarial)."""

    correct: np.ndarray
    nll: np.ndarray
    entropy: np.ndarray
    mi: np.ndarray
    norm: np.ndarray | None = None
    seconds: float = 0.0
    confidence: np.ndarray | None = None
    """max_c p̄_c, the model average's confidence in its prediction (for reliability diagrams)."""

    def worse(self, other: _Outcome) -> _Outcome:
        """Per example, the worse of two outcomes: misclassified first, then the higher NLL."""
        take = (other.correct < self.correct) | ((other.correct == self.correct) & (other.nll > self.nll))
        pick = lambda a, b: np.where(take, b, a)  # noqa: E731
        norms = None if self.norm is None or other.norm is None else pick(self.norm, other.norm)
        both = self.confidence is not None and other.confidence is not None
        conf = pick(self.confidence, other.confidence) if both else None
        return _Outcome(
            pick(self.correct, other.correct), pick(self.nll, other.nll), pick(self.entropy, other.entropy),
            pick(self.mi, other.mi), norms, self.seconds + other.seconds, conf,
        )  # fmt: skip


_FIELDS = ("correct", "nll", "entropy", "mi", "confidence")
"""Per-example arrays `_evaluate` returns (the first four are `_Outcome`'s positional fields)."""


def _eval_generator(device: torch.device, seed: int, batch_index: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + batch_index + 7)


@torch.no_grad()
def _evaluate(posterior: Posterior, x: torch.Tensor, y: torch.Tensor, k: int, gen: torch.Generator) -> dict:
    from robusthyper.ensemble import StochasticEnsemble

    logits = StochasticEnsemble(posterior, k, gen).sample_logits(x)
    log_p = log_predictive(logits)
    return {
        "correct": (log_p.argmax(-1) == y).cpu().numpy(),
        "nll": nll(log_p, y).cpu().numpy(),
        "entropy": predictive_entropy(logits).cpu().numpy(),
        "mi": mutual_information(logits).cpu().numpy(),
        "confidence": log_p.max(-1).values.exp().cpu().numpy(),
    }


def _perturbation_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm is Norm.LINF else flat.norm(dim=1)


GRADIENT_PROBE = 32
"""Examples on which the input-gradient health of a model is probed (`check_gradients`)."""


def check_gradients(
    posterior: Posterior, x: torch.Tensor, y: torch.Tensor, k: int, *, seed: int = 0, name: str = "model"
) -> dict[str, float]:
    """The input-gradient health of the EOT attack loss on the probe batch `x` (`sanity.gradient_health`:
    shares of zero, NaN and infinite entries, mean |grad|), warning in one line when the gradient is all
    zero (gradient masking: gradient attacks cannot move the inputs) or not finite (a broken model).

    It never stops the evaluation: a fully masked model gets its numbers and, from the sanity flags, its
    `zero-gradients` / `nonfinite-gradients` error, which a gate's `no-flags` rule fails on."""
    from robusthyper import sanity

    health = sanity.gradient_health(posterior, x, y, k=k, seed=seed)
    nonfinite = health["grad_nan_fraction"] + health["grad_inf_fraction"]
    if nonfinite > 0:
        log.warning(
            "%s: %.1f%% of the input-gradient entries of the attack loss are NaN or infinite on %d probe "
            "examples: the model or its loss is numerically broken; its attack numbers are unreliable "
            "(flagged nonfinite-gradients)", name, 100 * nonfinite, len(x),
        )  # fmt: skip
    elif health["grad_zero_fraction"] >= 1.0:
        log.warning(
            "%s: the input gradient of the attack loss is exactly zero on all %d probe examples: gradient "
            "attacks cannot move the inputs, so their robust accuracy is meaningless (flagged "
            "zero-gradients); use a gradient-free attack (square) or BPDA", name, len(x),
        )  # fmt: skip
    return health


def _attack_split(
    model: ModelUnderTest,
    spec: AttackSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    input_shape: tuple[int, ...],
    num_classes: int,
    tick: Callable[[int], None],
) -> _Outcome:
    """Run one spec (all restarts) over every batch; evaluate with K_eval; worst case over restarts."""
    device = model.posterior.device
    best: _Outcome | None = None
    for restart in range(spec.restarts):
        started = time.perf_counter()
        parts: dict[str, list[np.ndarray]] = {k: [] for k in (*_FIELDS, "norm")}
        # Seeds per restart: the posterior samples and numpy's random starts differ between restarts.
        attack_gen = torch.Generator(device=device).manual_seed(spec.seed * 7919 + restart)
        attack = (
            None
            if spec.eps == 0
            else build_attack(model.posterior, spec, input_shape, num_classes, batch_size, attack_gen)
        )
        np.random.seed((spec.seed * 7919 + restart) % 2**32)
        for b, start in enumerate(range(0, len(y), batch_size)):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            # True labels, never predictions.
            x_adv = xb if attack is None else attack.generate(xb, yb)
            delta_norm = _perturbation_norm(x_adv - xb, spec.norm)
            # The papers' protocols (clip = false) may leave [0, 1] as their code did; the eps budget holds always.
            outside = spec.clip and bool(x_adv.min() < 0 or x_adv.max() > 1)
            if outside or delta_norm.max() > spec.eps + NORM_TOLERANCE:
                raise RuntimeError(
                    f"{spec.label} produced inputs outside [0, 1] or beyond eps={spec.eps:g} "
                    f"(max norm {delta_norm.max().item():.6g}); this is a bug"
                )
            out = _evaluate(model.posterior, x_adv, yb, spec.k_eval, _eval_generator(device, spec.seed, b))
            for key, value in out.items():
                parts[key].append(value)
            parts["norm"].append(delta_norm.cpu().numpy())
            tick(len(yb))
        outcome = _Outcome(
            *(np.concatenate(parts[k]) for k in (*_FIELDS[:4], "norm")),
            seconds=time.perf_counter() - started,
            confidence=np.concatenate(parts["confidence"]),
        )
        best = outcome if best is None else best.worse(outcome)
    assert best is not None
    return best


def _clean(
    posterior: Posterior, x: torch.Tensor, y: torch.Tensor, k: int, seed: int, batch_size: int
) -> _Outcome:
    device = posterior.device
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _FIELDS}
    for b, start in enumerate(range(0, len(y), batch_size)):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        for key, value in _evaluate(posterior, xb, yb, k, _eval_generator(device, seed, b)).items():
            parts[key].append(value)
    return _Outcome(
        *(np.concatenate(parts[k]) for k in _FIELDS[:4]), confidence=np.concatenate(parts["confidence"])
    )


def _rows(base: dict[str, Any], clean: _Outcome, adv: _Outcome | None) -> list[dict[str, Any]]:
    rows = []
    for which, outcome in (("clean", clean), ("adversarial", adv)):
        if outcome is None:
            continue
        values = {
            "accuracy": outcome.correct.mean(),
            "nll": outcome.nll.mean(),
            "entropy": outcome.entropy.mean(),
            "mutual_information": outcome.mi.mean(),
        }
        if which == "adversarial":
            if outcome.norm is not None:
                values["max_perturbation"] = outcome.norm.max()
            values["seconds"] = outcome.seconds
        rows += [{**base, "input": which, "metric": m, "value": float(v)} for m, v in values.items()]
    return rows


def run(
    models: Sequence[ModelUnderTest],
    specs: Sequence[AttackSpec],
    split: Split,
    *,
    dataset: str,
    n: int | None = None,
    batch_size: int = 128,
    progress: bool | None = None,
    clean_cache: dict[tuple, Any] | None = None,
    gradient_check: bool = True,
) -> Evaluation:
    """Evaluate every model under every spec on the first `n` examples of `split`.

    Returns an `Evaluation` whose `results` has one row per (model, attack, eps, input, metric) with the
    settings in every row (dataset, n, attack, norm, eps, steps, step_size, restarts, random_init, eot,
    k_attack, k_eval, seed, protocol), and whose `examples` holds per-example outcomes (for detection AUROCs, gates).
    `clean_cache` lets calls on the same split share their clean evaluations (a sweep runs one spec per call).
    `gradient_check`: probe each model's input gradient first and warn when it is all zero or not finite
    (`check_gradients`; callers that probe once themselves, such as a sweep, pass False).
    """
    if not models:
        raise UserError("no model to evaluate; pass --model NAME")
    if not specs:
        raise UserError("no attack to run; pass --attack NAME and --eps VALUE")
    n = len(split) if n is None else n
    if not 0 < n <= len(split):
        raise UserError(f"--n {n} is out of range: the {dataset} test set has {len(split)} examples")
    if batch_size <= 0:
        raise UserError(f"--batch-size {batch_size} must be positive")
    input_shape = tuple(split.x.shape[1:])

    # Work, in examples, for the progress bar (restarts count; eps = 0 is cheap but still ticks).
    total = len(models) * sum(spec.restarts for spec in specs) * n
    bar = tqdm(total=total, desc="attack", unit="img", disable=None if progress is None else not progress)
    result_rows: list[dict[str, Any]] = []
    example_rows: list[pd.DataFrame] = []
    with bar:
        for model in models:
            posterior = model.posterior
            device = posterior.device
            x, y = split.x[:n].to(device), split.y[:n].to(device)
            num_classes = _num_classes(posterior, x[:1])
            with frozen(posterior):
                if gradient_check:
                    probe = min(n, GRADIENT_PROBE)
                    check_gradients(posterior, x[:probe], y[:probe], k=min(specs[0].k_attack, 4),
                                    name=model.name)  # fmt: skip
                cleans: dict[tuple[int, int], _Outcome] = {}
                outcomes: list[tuple[AttackSpec, _Outcome]] = []
                for spec in specs:
                    key = (spec.k_eval, spec.seed)
                    shared = (id(posterior), n, batch_size, *key)
                    if key not in cleans and clean_cache is not None and shared in clean_cache:
                        cleans[key] = clean_cache[shared]
                    if key not in cleans:
                        cleans[key] = _clean(posterior, x, y, spec.k_eval, spec.seed, batch_size)
                        if clean_cache is not None:
                            clean_cache[shared] = cleans[key]
                    bar.set_postfix_str(f"{model.name} {spec.label} eps={spec.eps:.4g}")
                    adv = _attack_split(model, spec, x, y, batch_size, input_shape, num_classes, bar.update)
                    outcomes.append((spec, adv))
                    base = _base_row(model, spec, dataset, n, spec.label)
                    result_rows += _rows(base, cleans[key], adv)
                    example_rows.append(_examples(model, spec, spec.label, cleans[key], adv))
                    log.info("%s %s eps=%g: robust accuracy %.4f", model.name, spec.label, spec.eps,
                             adv.correct.mean())  # fmt: skip
            result_rows += _worst_cases(model, outcomes, cleans, dataset, n, example_rows)
            _warn_if_not_monotone(model.name, outcomes)
    results = pd.DataFrame(result_rows)
    examples = pd.concat(example_rows, ignore_index=True) if example_rows else pd.DataFrame()
    settings = {"dataset": dataset, "n": n, "batch_size": batch_size, "specs": [s.settings() for s in specs]}
    return Evaluation(results, examples, settings)


def _warn_if_not_monotone(name: str, outcomes: list[tuple[AttackSpec, _Outcome]]) -> None:
    """METHODS.md §4: robust accuracy must not rise with eps for the same attack; if it does (beyond a few
    examples of sampling noise) the attack is failing, e.g. from gradient masking or too few steps."""
    curves: dict[tuple, list[tuple[float, float]]] = {}
    for spec, outcome in outcomes:
        key = (spec.label, spec.norm, spec.eot, spec.k_attack, spec.k_eval, spec.seed, spec.restarts)
        curves.setdefault(key, []).append((spec.eps, float(outcome.correct.mean())))
    for key, points in curves.items():
        points.sort()
        slack = 3 / max(1, len(outcomes[0][1].correct))
        for (eps_a, acc_a), (eps_b, acc_b) in zip(points, points[1:], strict=False):
            if acc_b > acc_a + slack:
                log.warning(
                    "%s %s: robust accuracy rises from %.4f at eps=%g to %.4f at eps=%g; the attack is "
                    "unreliable (too few steps or samples, or gradient masking)", name, key[0], acc_a, eps_a,
                    acc_b, eps_b,
                )  # fmt: skip


def _num_classes(posterior: Posterior, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(posterior.logits(x, 1, torch.Generator(device=x.device).manual_seed(0)).shape[-1])


def _base_row(model: ModelUnderTest, spec: AttackSpec, dataset: str, n: int, label: str) -> dict[str, Any]:
    s = spec.settings()
    k_attack = s["k_attack"] if getattr(model.posterior, "stochastic", True) else 1
    return {
        "model": model.name, "posterior": model.kind, "dataset": dataset, "n": n, "attack": label,
        "norm": s["norm"], "eps": s["eps"], "steps": s["steps"], "step_size": s["step_size"],
        "restarts": s["restarts"], "random_init": s["random_init"], "eot": s["eot"],
        "k_attack": k_attack, "k_eval": s["k_eval"], "seed": s["seed"], "protocol": spec.protocol,
    }  # fmt: skip


def _examples(
    model: ModelUnderTest,
    spec: AttackSpec,
    label: str,
    clean: _Outcome,
    adv: _Outcome,
    k_attack: int | None = None,
) -> pd.DataFrame:
    """Per-example outcomes of one attack. `k_attack` and `protocol` are columns so that rows of an EOT
    study (the same attack at several K_attack) and of the papers' protocols stay apart."""
    if k_attack is None:
        k_attack = spec.k_attack if getattr(model.posterior, "stochastic", True) else 1
    return pd.DataFrame({
        "model": model.name, "attack": label, "norm": spec.norm.value, "eps": spec.eps,
        "k_attack": k_attack, "protocol": spec.protocol if label != WORST_CASE else "strong",
        "k_eval": spec.k_eval, "seed": spec.seed, "index": np.arange(len(clean.correct)),
        "clean_correct": clean.correct, "adv_correct": adv.correct,
        "clean_entropy": clean.entropy, "adv_entropy": adv.entropy,
        "clean_mi": clean.mi, "adv_mi": adv.mi,
        "clean_nll": clean.nll, "adv_nll": adv.nll,
        "clean_confidence": _or_nan(clean.confidence, len(clean.correct)),
        "adv_confidence": _or_nan(adv.confidence, len(adv.correct)),
        "perturbation": adv.norm if adv.norm is not None else np.nan,
    })  # fmt: skip


def _or_nan(values: np.ndarray | None, n: int) -> np.ndarray:
    return np.full(n, np.nan) if values is None else values


def _worst_cases(
    model: ModelUnderTest,
    outcomes: list[tuple[AttackSpec, _Outcome]],
    cleans: dict[tuple[int, int], _Outcome],
    dataset: str,
    n: int,
    example_rows: list[pd.DataFrame],
) -> list[dict[str, Any]]:
    """Per (norm, eps, K_eval, seed) with two or more different attacks: the worst outcome per example.
    Only the strong protocol counts: the papers' protocols (`spec.protocol` 'paper-*') are replayed for
    comparison, unclipped, and never enter the worst case."""
    groups: dict[tuple, list[tuple[AttackSpec, _Outcome]]] = {}
    for spec, outcome in outcomes:
        if spec.protocol != "strong":
            continue
        groups.setdefault((spec.norm, spec.eps, spec.k_eval, spec.seed), []).append((spec, outcome))
    rows: list[dict[str, Any]] = []
    for (_, _, k_eval, seed), members in groups.items():
        if len({s.label for s, _ in members}) < 2:
            continue
        worst = members[0][1]
        for _, outcome in members[1:]:
            worst = worst.worse(outcome)
        spec = members[0][0]
        base = _base_row(model, spec, dataset, n, WORST_CASE)
        base.update(steps=math.nan, step_size=math.nan, restarts=math.nan, random_init=None,
                    eot="+".join(sorted({s.eot.value for s, _ in members})))  # fmt: skip
        base["k_attack"] = max(int(_base_row(model, s, dataset, n, "")["k_attack"]) for s, _ in members)
        rows += _rows(base, cleans[(k_eval, seed)], worst)
        example_rows.append(
            _examples(model, spec, WORST_CASE, cleans[(k_eval, seed)], worst, k_attack=base["k_attack"])
        )
    return rows


def worst_cases_from_examples(
    model: ModelUnderTest, cells: Sequence[tuple[AttackSpec, pd.DataFrame, float]], dataset: str, n: int
) -> tuple[list[dict[str, Any]], list[pd.DataFrame]]:
    """The worst case over attacks that `run` computes, from recorded per-example tables instead of a run's
    memory (a sweep evaluates one spec at a time). `cells`: (spec, its rows of `examples`, its attack
    seconds) of one model. Returns the worst case's result rows and per-example frames."""

    def outcome(frame: pd.DataFrame, which: str, seconds: float = 0.0) -> _Outcome:
        column = lambda name: frame[f"{which}_{name}"].to_numpy()  # noqa: E731
        norm = frame["perturbation"].to_numpy() if which == "adv" else None
        return _Outcome(column("correct"), column("nll"), column("entropy"), column("mi"), norm, seconds,
                        column("confidence"))  # fmt: skip

    outcomes: list[tuple[AttackSpec, _Outcome]] = []
    cleans: dict[tuple[int, int], _Outcome] = {}
    for spec, frame, seconds in cells:
        frame = frame.sort_values("index", kind="stable")
        cleans.setdefault((spec.k_eval, spec.seed), outcome(frame, "clean"))
        outcomes.append((spec, outcome(frame, "adv", seconds)))
    example_rows: list[pd.DataFrame] = []
    rows = _worst_cases(model, outcomes, cleans, dataset, n, example_rows)
    return rows, example_rows


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, attack, norm, eps, eot, K_attack, K_eval): clean and robust accuracy, NLL,
    entropy and mutual information on clean and adversarial inputs, and the attack's seconds."""
    keys = ["model", "attack", "norm", "eps", "eot", "k_attack", "k_eval"]
    frame = results.assign(column=results["input"].str[:3] + "_" + results["metric"])
    wide = frame.pivot_table(index=keys, columns="column", values="value", aggfunc="first")
    wide = wide.reset_index().rename(columns={"cle_accuracy": "clean_acc", "adv_accuracy": "robust_acc"})
    wide.columns.name = None
    order = ["clean_acc", "robust_acc", "cle_nll", "adv_nll", "cle_entropy", "adv_entropy",
             "cle_mutual_information", "adv_mutual_information", "adv_seconds"]  # fmt: skip
    wide = wide[[c for c in [*keys, *order] if c in wide.columns]]
    wide = wide.dropna(subset=["robust_acc"]) if "robust_acc" in wide else wide
    return wide.rename(columns=lambda c: c.replace("cle_", "clean_").replace("mutual_information", "mi"))


# --------------------------------------------------------------------------------------------------------
# Models from the command line: a recipe name, a checkpoint path, or module:factory
# --------------------------------------------------------------------------------------------------------


def is_factory_ref(ref: str) -> bool:
    """`package.module:function` (and not an existing path that happens to hold a colon)."""
    module, sep, attr = ref.partition(":")
    return bool(sep and module and attr and not Path(ref).exists() and "/" not in module)


def load_factory(ref: str, input_shape: tuple[int, ...], device: str | torch.device) -> ModelUnderTest:
    """Call `module:factory()`; it must return a `Posterior` or an `nn.Module` mapping [B, *input_shape] in
    [0, 1] to logits [B, C]. A plain module counts as stochastic when two passes on a probe input differ."""
    import importlib

    from robusthyper.ensemble import ModulePosterior

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
    store_dir = model_store.ensure_writable(Path(store or model_store.default_store()))
    data = load_dataset(recipe_obj.dataset, data_dir)
    result = fit(recipe_obj, data, device=device, progress=False if quiet else None)
    path = model_store.save(result.posterior, recipe_obj, result.metrics, store_dir, result.history)
    return model_store.load(path, store_dir, device)
