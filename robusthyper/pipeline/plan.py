"""Plan: the cells of an evaluation, from models x attack specs (x OOD sets), each keyed by its content.

A *cell* is the unit of work an executor runs and a run folder records: one (model, spec) attack, one
(model, OOD set) detection, or one model's gradient probe. Its key hashes everything that determines its
numbers: the model's name and weights (checkpoint sha256, or a hash of a factory model's state), the full
spec, the dataset, n, the batch size (evaluation draws one generator per batch), the device type and the
cell version. So a resumed run reuses exactly the cells it may, and a run with other settings recomputes.

Decided here, once: a point estimate has one posterior sample (`Posterior.samples`), so its attack specs
carry K_attack = 1, and an EOT study's K_attack values are one cell for it, not several identical ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from robusthyper.attacks import AttackSpec
from robusthyper.data import Split
from robusthyper.loading import ModelUnderTest
from robusthyper.run import schema as s

CELL_VERSION = 6
"""Part of every cell's key: bump it when a change to the code changes what a cell computes."""


class CellKind(str, Enum):
    ATTACK = "attack"
    """Adversarial examples for one spec, evaluated with K_eval (`robusthyper.compute.attack_cell`)."""
    OOD = "ood"
    """OOD detection AUROCs against one OOD set (`robusthyper.compute.ood_cell`)."""
    PROBE = "probe"
    """The input-gradient health of one model (`robusthyper.compute.probe_cell`)."""


def cell_key(payload: Mapping[str, Any]) -> str:
    """A stable hash of a cell's settings (JSON with sorted keys)."""
    text = json.dumps(payload, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Cell:
    """One unit of work: what to compute (`kind`, `model`, `spec` or `ood_set`) and its key's content."""

    kind: CellKind
    model: str
    payload: Mapping[str, Any] = field(compare=False, hash=False)
    spec: AttackSpec | None = None
    """Attack cells: the spec as planned. Probe cells: the model's first spec (its K_attack and seed)."""
    ood_set: str | None = None

    @property
    def key(self) -> str:
        return cell_key(self.payload)

    @property
    def label(self) -> str:
        if self.kind is CellKind.ATTACK and self.spec is not None:
            return f"{self.model} {self.spec.label} eps={self.spec.eps:g} K={self.spec.k_attack}"
        return f"{self.model} {self.kind.value} {self.ood_set or ''}".rstrip()


@dataclass
class Workload:
    """What every cell of a plan reads: the models, the test split, the OOD inputs and the shared settings.
    An executor gets it once (a distributed one ships it to its workers once)."""

    models: dict[str, ModelUnderTest]
    split: Split
    dataset: str
    n: int
    batch_size: int
    ood_inputs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Plan:
    """The cells in the order they are run and assembled, and each model's specs as planned."""

    cells: list[Cell]
    specs: dict[str, list[AttackSpec]]
    """Model name -> its attack specs (K_attack decided for its posterior)."""
    ood_sets: list[str]

    def __len__(self) -> int:
        return len(self.cells)


def specs_for(model: ModelUnderTest, specs: Sequence[AttackSpec]) -> list[AttackSpec]:
    """The specs a model is attacked with: K_attack as many samples as its posterior has to offer
    (`Posterior.samples`), identical specs once."""
    planned = (spec.model_copy(update={"k_attack": model.posterior.samples(spec.k_attack)}) for spec in specs)
    return list(dict.fromkeys(planned))


def plan(
    models: Sequence[ModelUnderTest],
    specs: Sequence[AttackSpec],
    *,
    ids: Mapping[str, str],
    dataset: str,
    n: int,
    batch_size: int,
    device: str,
    ood_sets: Sequence[tuple[str, int]] = (),
) -> Plan:
    """Per model: its gradient probe, its attack cells, then one OOD cell per (name, size) of `ood_sets`
    (K_eval and seed of the first spec). `ids`: model name -> identity of its weights."""
    common = {"cell_version": f"{CELL_VERSION}.{s.SCHEMA_VERSION}", "dataset": dataset, "n": n,
              "batch_size": batch_size, "device": torch.device(device).type}  # fmt: skip
    first = specs[0]
    cells: list[Cell] = []
    planned: dict[str, list[AttackSpec]] = {}
    for model in models:
        identity = {"name": model.name, "weights": ids[model.name], "posterior": model.kind}
        own = planned[model.name] = specs_for(model, specs)
        probe = {**common, "model": identity, "probe": "gradient", "k_attack": own[0].k_attack, "seed": own[0].seed}
        cells.append(Cell(CellKind.PROBE, model.name, probe, own[0]))
        for spec in own:
            cells.append(Cell(CellKind.ATTACK, model.name, {**common, "model": identity, "spec": spec.settings()},
                              spec))  # fmt: skip
        for name, size in ood_sets:
            payload = {**common, "model": identity, "ood": name, "n_ood": size, "k_eval": first.k_eval,
                       "seed": first.seed}  # fmt: skip
            cells.append(Cell(CellKind.OOD, model.name, payload, first, name))
    return Plan(cells, planned, [name for name, _ in ood_sets])
