"""The rules of the house, checked: layers import only downward (docs/architecture.md).

A unit is a top-level module or package of ``ovseg``; it may import only units of a lower layer. So the
model, the losses and the data never reach up into checkpoints, inference, evaluation, the engine or the CLI,
and one file becomes a model in exactly one place below inference.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1] / "src" / "ovseg"
LAYERS = [
    {"errors"},
    {"config", "fileio", "images", "label_stats", "prompts", "class_presets", "ranks"},
    {"model", "losses", "data", "viz", "weights"},
    {"factory", "checkpoints"},
    {"inference"},
    {"evaluation", "verify", "export"},
    {"engine", "demo"},
    {"web", "quickstart"},
    {"cli", "__init__"},
    {"__main__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def imported_units(path: Path) -> set[str]:
    """The ovseg units that ``path`` imports (relative or absolute), other than its own."""
    package = path.relative_to(ROOT).parts[:-1]
    units = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            target = [*package[: len(package) - node.level + 1], *(node.module or "").split(".")]
            target = [t for t in target if t] or [alias.name for alias in node.names]
            units.add(target[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ovseg."):
            units.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            units.update(a.name.split(".")[1] for a in node.names if a.name.startswith("ovseg."))
    return units


def unit_of(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def test_every_unit_has_a_layer():
    units = {unit_of(p) for p in ROOT.rglob("*.py")}
    assert units <= set(RANK), f"give these a layer in LAYERS: {sorted(units - set(RANK))}"


def test_layers_import_only_downward():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        unit = unit_of(path)
        for target in imported_units(path) - {unit}:
            if target in RANK and RANK[target] >= RANK[unit]:
                upward.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not upward, "\n".join(upward)
