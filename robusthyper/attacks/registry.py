"""The registry of attack families: `FAMILIES`, one `register` line per family, and what reads it (lookup by
name or results label, trait queries, the README table, the CLI help, `build_attack`).

Cheap to import (no torch, numpy, pydantic or ART): the family files declare their builders lazily.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from robusthyper.attacks import apgd, fgsm, paper_bbh, paper_bhn, pgd, pgd_adaptive, square
from robusthyper.attacks.base import STEPS_SUFFIX, Attack, AttackFamily, Trait
from robusthyper.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from robusthyper.attacks.spec import AttackSpec
    from robusthyper.posteriors.base import Posterior

FAMILIES: dict[str, AttackFamily] = {}
"""Every registered attack family by name, in registration order (help, README and contract tests follow it)."""


def register(family: AttackFamily) -> AttackFamily:
    """Add `family` to the registry; a name already registered is a `ValueError`. Returns `family`."""
    if family.name in FAMILIES:
        raise ValueError(f"attack family '{family.name}' is already registered")
    FAMILIES[family.name] = family
    return family


def unregister(name: str) -> AttackFamily:
    """Remove a family from the registry (tests); returns it."""
    return FAMILIES.pop(name)


@contextmanager
def registered(family: AttackFamily) -> Iterator[AttackFamily]:
    """`family` registered for the duration of the block (tests)."""
    register(family)
    try:
        yield family
    finally:
        unregister(family.name)


register(fgsm.FGSM)
register(pgd.PGD)
register(apgd.APGD_CE)
register(apgd.APGD_DLR)
register(square.SQUARE)
register(pgd_adaptive.PGD_ADAPTIVE)
register(paper_bhn.PAPER_BHN_FGSM)
register(paper_bbh.PAPER_BBH_FGSM)


def family(name: str) -> AttackFamily:
    """The registered family called `name` (case and surrounding spaces ignored); else a one-line
    `ConfigError` listing the known names."""
    key = str(name).strip().lower()
    if key not in FAMILIES:
        raise ConfigError(f"unknown attack '{name}'; known: {', '.join(FAMILIES)}")
    return FAMILIES[key]


def family_of_label(label: object) -> str:
    """The family of a results-table attack label: labels are the name of a single-step family ('fgsm',
    'paper-bbh-fgsm') and 'name-<steps>' otherwise ('pgd-40', 'apgd-ce-100', 'pgd-adaptive-20'). A label of no
    registered family ('worst-case', an old run's) loses a trailing '-<digits>' all the same."""
    text = str(label)
    return text if text in FAMILIES else STEPS_SUFFIX.sub("", text)


def families_with(*traits: Trait, without: tuple[Trait, ...] = ()) -> list[str]:
    """Names of the registered families that have every one of `traits` and none of `without`."""
    return [
        name for name, f in FAMILIES.items() if f.has(*traits) and not any(t in f.traits for t in without)
    ]


def markdown_table() -> str:
    """The README's attack table, generated from the registry (`robusthyper attacks` prints it)."""
    lines = [
        "| attack | what it does | steps | step size | random start | norms | traits |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in FAMILIES.values():
        summary = f.summary.replace("|", "\\|")
        traits = ", ".join(t.value for t in Trait if t in f.traits)
        norms = ", ".join(n.value for n in f.norms)
        start = "yes" if f.random_init else "no"
        lines.append(
            f"| `{f.name}` | {summary} | {f.steps} | {f.default_step()} | {start} | {norms} | {traits} |"
        )
    return "\n".join(lines) + "\n"


def help_lines() -> list[str]:
    """One line per registered family for `robusthyper attack --help`: name, summary, defaults, norms."""
    out = []
    for f in FAMILIES.values():
        unit = ("query", "queries") if f.has(Trait.GRADIENT_FREE) else ("step", "steps")
        defaults = f"{f.steps} {unit[f.steps != 1]}"
        if f.step_factor is not None and not f.is_single_step:
            defaults += f" of {f.default_step()}"
        if f.random_init:
            defaults += ", random start"
        out.append(f"{f.name}: {f.summary} [{defaults}; {'/'.join(n.value for n in f.norms)}]")
    return out


def build_attack(
    posterior: Posterior,
    spec: AttackSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
) -> Attack:
    """The attack for `spec` against `posterior`'s model average (K = `spec.k_attack` per step).

    `generator` drives posterior sampling during the attack (default: seeded with `spec.seed`). Seed numpy
    before `generate`: ART's random starts, Square's squares and the own loops' random starts come from its
    global RNG.
    """
    import torch

    from robusthyper.ensemble import StochasticEnsemble

    if spec.eps <= 0:
        raise ValueError("eps = 0 needs no attack: evaluate the clean inputs instead")
    device = posterior.device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(spec.seed)
    ensemble = StochasticEnsemble(posterior, spec.k_attack, generator)
    return family(spec.attack).attack(ensemble, spec, input_shape, num_classes, batch_size)


TABLE_BEGIN = "<!-- attack-table: generated by `robusthyper attacks --write README.md` -->"
TABLE_END = "<!-- /attack-table -->"


def table_in(text: str) -> str | None:
    """The attack table between the markers of a README's `text`, or None without markers."""
    if TABLE_BEGIN not in text or TABLE_END not in text:
        return None
    return text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip("\n") + "\n"


def with_table(text: str) -> str:
    """`text` with the table between the markers replaced by the registry's (`ValueError` without markers)."""
    if table_in(text) is None:
        raise ValueError(f"no attack table markers ({TABLE_BEGIN} ... {TABLE_END}) to replace")
    head, rest = text.split(TABLE_BEGIN, 1)
    return f"{head}{TABLE_BEGIN}\n{markdown_table()}{TABLE_END}{rest.split(TABLE_END, 1)[1]}"
