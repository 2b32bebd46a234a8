"""Assemble: the tidy tables of a run from its cells' records.

Per model, in plan order: its attack cells' rows, the per-example worst case over its strong attacks at each
budget (`robusthyper.compute.worst_cases`), its OOD rows. The gradient probes' rows stay out of the results
table (they are not an attack) but feed the sanity flags with the rest (`robusthyper.sanity.flags`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robusthyper import compute, sanity
from robusthyper.attacks import AttackSpec
from robusthyper.pipeline.cells import CellRecord
from robusthyper.pipeline.plan import CellKind, Plan
from robusthyper.run import schema as s


@dataclass
class Assembled:
    results: pd.DataFrame
    examples: pd.DataFrame
    probes: pd.DataFrame
    """The gradient probes' rows (attack 'gradient-check')."""
    flags: list[sanity.Flag]

    @property
    def health(self) -> dict[str, dict[str, float]]:
        """Model -> its gradient-health numbers (for meta.json)."""
        if self.probes.empty:
            return {}
        return {str(model): dict(zip(group[s.METRIC], group[s.VALUE].astype(float), strict=True))
                for model, group in self.probes.groupby(s.MODEL, sort=False)}  # fmt: skip


def _seconds(rows: list[dict]) -> float:
    return float(next((r[s.VALUE] for r in rows if r[s.METRIC] == s.SECONDS), 0.0))


def assemble(plan: Plan, records: Mapping[str, CellRecord]) -> Assembled:
    result_rows: list[dict] = []
    frames: list[pd.DataFrame] = []
    probe_rows: list[dict] = []
    for model in plan.specs:
        attacks = []
        ood_rows: list[dict] = []
        for cell in plan.cells:
            if cell.model != model:
                continue
            record = records[cell.key]
            if cell.kind is CellKind.PROBE:
                probe_rows += record.rows
            elif cell.kind is CellKind.OOD:
                ood_rows += record.rows
            else:
                assert cell.spec is not None
                result_rows += record.rows
                frames.append(record.examples)
                attacks.append((cell.spec, record.rows[0], record.examples, _seconds(record.rows)))
        worst_rows, worst_frames = compute.worst_cases(attacks)
        result_rows += worst_rows + ood_rows
        frames += worst_frames
    results = pd.DataFrame(result_rows)
    examples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    probes = pd.DataFrame(probe_rows)
    found = sanity.flags(pd.concat([results, probes], ignore_index=True), examples)
    return Assembled(results, examples, probes, found)


def planned_tables(names: Sequence[str], specs: Sequence[AttackSpec], ood: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results and examples tables a run of `specs` on models `names` will hold, with placeholder values
    (0) and one example per cell, built by the same row builders as a real run: what a gate's rules are
    checked against before a long evaluation starts. OOD rows get the set name '*'."""
    zero = np.zeros(1)
    placeholder = compute.Outcome(zero, zero, zero, zero, zero, norm=zero)
    rows: list[dict] = []
    frames: list[pd.DataFrame] = []
    for name in names:
        cells = []
        for spec in specs:
            base = compute.base_row(name, "", spec, "", 1)
            rows += compute.outcome_rows(base, placeholder, placeholder)
            frame = compute.example_frame(base, placeholder, placeholder)
            frames.append(frame)
            cells.append((spec, base, frame, 0.0))
        worst_rows, worst_frames = compute.worst_cases(cells)
        rows += worst_rows
        frames += worst_frames
        if ood:
            values = {**{score: 0.0 for score in s.OOD_AUROC}, **{f"mean_{score}": 0.0 for score in s.OOD_MEAN}}
            rows += compute.ood_rows(name, "", "", 1, "*", specs[0].k_eval, specs[0].seed, values)
    return pd.DataFrame(rows), pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
