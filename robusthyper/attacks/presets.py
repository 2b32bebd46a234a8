"""Attack presets and suites: `attacks/<name>.toml`, found in ./attacks (the user's own) and then in the
project's attacks/ folder, or given as a path.

A preset is either one attack as top-level keys, or a suite of `[[attacks]]` tables; `eps` may be a list (an
eps grid), so may `k_attack` (an EOT convergence study: one spec per (eps, K_attack)), and every key is an
`AttackSpec` field. Unknown keys are errors. Example:

    description = "PGD-40 with EOT"
    attack = "pgd"
    norm = "linf"
    eps = [0.05, 0.1, "8/255"]
    steps = 40

Crossing an eps grid with a K list multiplies the cost, so an EOT study is best a second table at one eps:

    [[attacks]]                 # the main grid at K = 20
    attack = "pgd"
    eps = [0, 0.1, 0.2, 0.3]
    k_attack = 20
    [[attacks]]                 # the EOT study at eps 0.1
    attack = "pgd"
    eps = 0.1
    k_attack = [1, 5, 20, 50]

Specs that come out identical (here PGD at eps 0.1 with K = 20, in both tables) are kept once, in the order
they first appear, so overlapping tables neither run a cell twice nor give duplicate rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robusthyper.attacks.spec import AttackSpec, applicable, expand
from robusthyper.errors import ConfigError
from robusthyper.settings import available_tomls, find_toml, read_toml

PRESET_DIRNAME = "attacks"


def available_presets() -> list[str]:
    return available_tomls(PRESET_DIRNAME)


def is_preset_ref(ref: str) -> bool:
    """A path to a TOML file, or the name of a preset (not an attack name)."""
    return ref.endswith(".toml") or "/" in ref or ref in available_presets()


def find_preset(ref: str) -> Path:
    return find_toml(ref, PRESET_DIRNAME, "attack preset")


def load_preset(ref: str, overrides: dict[str, Any] | None = None) -> list[AttackSpec]:
    """The specs a preset describes (one per attack and eps), with `overrides` (CLI flags) applied."""
    path = find_preset(ref)
    return specs_from_data(path, read_toml(path), overrides)


def specs_from_data(
    path: Path, data: dict[str, Any], overrides: dict[str, Any] | None = None
) -> list[AttackSpec]:
    """The specs of a preset's parsed TOML (`robusthyper.sweep` takes its suite-level keys out first), one
    per attack table, eps and K_attack, without duplicates."""
    data = dict(data)
    data.pop("description", None)
    # A suite's number of test examples: `robusthyper.sweep.load_suite` reads and checks it.
    data.pop("n", None)
    tables = data.pop("attacks", None)
    if tables is None:
        tables = [data]
    elif data:
        raise ConfigError(
            f"{path}: keys {sorted(data)} outside [[attacks]] tables; put them inside each table"
        )
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: 'attacks' must be an array of tables ([[attacks]])")
    specs: list[AttackSpec] = []
    for i, table in enumerate(tables):
        source = f"{path}" if len(tables) == 1 else f"{path} [[attacks]] #{i + 1}"
        specs += expand({**table, **applicable(table.get("attack", "pgd"), overrides or {})}, source)
    return list(dict.fromkeys(specs))  # identical specs of overlapping tables: once, first place kept
