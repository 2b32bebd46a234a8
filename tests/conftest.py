"""Shared fixtures: tiny recipes and data so tests run in seconds and never touch the network."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robusthyper.config import Recipe, parse_recipe
from robusthyper.data import Dataset, Split, dataset_info, load_dataset
from robusthyper.posteriors import POSTERIORS, Posterior, PosteriorKind, build_posterior


def tiny_recipe(kind: str, arch: str = "mlp", **train: Any) -> Recipe:
    """A small MLP (or LeNet) recipe for `kind` on mnist5k, trained for a moment."""
    table: dict[str, Any] = {
        "dataset": "mnist5k",
        "seed": 0,
        "net": {"arch": arch, "widths": [32]},
        "posterior": {"kind": kind},
        "train": {"epochs": 1, "batch_size": 64, "eval_samples": 4, "val_samples": 2, **train},
    }
    return parse_recipe(table, "<test>", f"tiny-{kind}")


def tiny_posterior(kind: str, arch: str = "mlp", seed: int = 0) -> Posterior:
    torch.manual_seed(seed)
    return build_posterior(tiny_recipe(kind, arch), dataset_info("mnist5k"))


@pytest.fixture(scope="session")
def mnist5k() -> Dataset:
    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def small_mnist(mnist5k: Dataset) -> Dataset:
    """600 training and 200 test digits: enough to learn something in a second."""
    return Dataset(
        info=mnist5k.info,
        train=Split(mnist5k.train.x[:600], mnist5k.train.y[:600]),
        test=Split(mnist5k.test.x[:200], mnist5k.test.y[:200]),
        ood=None,
        source=mnist5k.source,
    )


ALL_KINDS = [kind.value for kind in PosteriorKind if kind in POSTERIORS]


def pytest_terminal_summary(terminalreporter) -> None:
    """Print every passed test's `record_property("summary", ...)` lines (the release test's wheel size) at the
    end of the run, so that CI's log shows them without -s."""
    lines = [value for report in terminalreporter.stats.get("passed", [])
             for name, value in getattr(report, "user_properties", []) if name == "summary"]  # fmt: skip
    if lines:
        terminalreporter.write_sep("-", "summary")
        for line in lines:
            terminalreporter.write_line(str(line))
