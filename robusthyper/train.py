"""One variational-inference training loop for every posterior.

loss = mean NLL over the K training samples and the batch + beta(t) * KL / N, where N is the number of
training examples and beta(t) follows the recipe's annealing schedule. For a point estimate the KL is 0 and this
is ordinary training; for MC dropout it is dropout training.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from robusthyper.config import Recipe, TrainSpec
from robusthyper.data import Dataset, Split
from robusthyper.metrics import accuracy, log_predictive
from robusthyper.posteriors import Posterior, build_posterior

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """A trained posterior and what was measured while training it."""

    posterior: Posterior
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def kl_schedule(spec: TrainSpec, epoch: float) -> float:
    """beta at a (fractional) epoch: 0 during the delay, then a linear ramp to `kl_weight`."""
    if spec.kl_anneal_epochs == 0:
        return spec.kl_weight if epoch >= spec.kl_anneal_delay else 0.0
    ramp = (epoch - spec.kl_anneal_delay) / spec.kl_anneal_epochs
    return spec.kl_weight * min(1.0, max(0.0, ramp))


def split_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Hold out a seeded random share of the training split for per-epoch validation."""
    n_val = int(round(len(train) * fraction))
    if n_val == 0:
        return train, None
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, fit_idx = order[:n_val], order[n_val:]
    return Split(train.x[fit_idx], train.y[fit_idx]), Split(train.x[val_idx], train.y[val_idx])


@torch.no_grad()
def evaluate_accuracy(
    posterior: Posterior,
    split: Split,
    k: int,
    generator: torch.Generator,
    batch_size: int = 500,
) -> float:
    """Accuracy of the posterior predictive (mean softmax over K fresh samples per batch)."""
    device = posterior.device
    correct: float = 0
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device)
        y = split.y[start : start + batch_size].to(device)
        k_eff = k if posterior.stochastic else 1
        correct += accuracy(log_predictive(posterior.logits(x, k_eff, generator)), y) * len(y)
    return correct / len(split)


def _optimizer(posterior: Posterior, spec: TrainSpec) -> torch.optim.Optimizer:
    params = [p for p in posterior.parameters() if p.requires_grad]
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.RMSprop(params, lr=spec.lr, weight_decay=spec.weight_decay)


def fit(
    recipe: Recipe,
    data: Dataset,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
) -> FitResult:
    """Build the recipe's posterior, train it on `data.train`, and measure test accuracy with K samples.

    `progress=None` shows a bar only on a terminal. Seeded by `recipe.seed`: the same recipe, data and
    device give the same weights.
    """
    spec = recipe.train
    device = torch.device(device)
    torch.manual_seed(recipe.seed)
    posterior = build_posterior(recipe, data.info).to(device)
    generator = torch.Generator(device=device).manual_seed(recipe.seed)
    shuffle = torch.Generator().manual_seed(recipe.seed + 1)

    fit_split, val_split = split_validation(data.train, spec.val_fraction, recipe.seed)
    n = len(fit_split)
    steps_per_epoch = max(1, -(-n // spec.batch_size))
    optimizer = _optimizer(posterior, spec)
    history: list[dict[str, float]] = []
    started = time.perf_counter()

    bar = tqdm(total=spec.epochs * steps_per_epoch, desc=f"train {recipe.name}", unit="step",
               disable=None if progress is None else not progress, leave=False)  # fmt: skip
    with bar:
        for epoch in range(spec.epochs):
            posterior.train()
            order = torch.randperm(n, generator=shuffle)
            totals = torch.zeros(3)
            for step in range(steps_per_epoch):
                idx = order[step * spec.batch_size : (step + 1) * spec.batch_size]
                x, y = fit_split.x[idx].to(device), fit_split.y[idx].to(device)
                beta = kl_schedule(spec, epoch + step / steps_per_epoch)
                logits, kl = posterior.elbo_terms(x, spec.train_samples, generator)
                nll = F.cross_entropy(logits.flatten(0, 1), y.repeat(logits.shape[0]))
                loss = nll + beta * kl / n
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if spec.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(posterior.parameters(), spec.grad_clip)
                optimizer.step()
                totals += torch.tensor([loss.item(), nll.item(), kl.item()])
                bar.update(1)
            row = dict(zip(("loss", "nll", "kl"), (totals / steps_per_epoch).tolist(), strict=True))
            row["epoch"] = epoch + 1
            if val_split is not None:
                posterior.eval()
                row["val_accuracy"] = evaluate_accuracy(posterior, val_split, spec.val_samples, generator)
            history.append(row)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "epoch"})
            log.info("%s epoch %d/%d: %s", recipe.name, epoch + 1, spec.epochs,
                     " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))  # fmt: skip

    train_seconds = time.perf_counter() - started
    posterior.eval()
    metrics = {
        "test_accuracy": evaluate_accuracy(posterior, data.test, spec.eval_samples, generator),
        "eval_samples": float(spec.eval_samples),
        "train_seconds": train_seconds,
        "epochs": float(spec.epochs),
    }
    if history:
        metrics.update({f"final_{k}": v for k, v in history[-1].items() if k != "epoch"})
    return FitResult(posterior, metrics, history)


def count_parameters(posterior: Posterior) -> int:
    return sum(p.numel() for p in posterior.parameters())
