"""The emulators are tools, not product: no module of the product imports them, and none lives there."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PRODUCT = ("hub", "customers", "integrations")


def product_modules() -> list[Path]:
    return [path for package in PRODUCT for path in sorted((ROOT / package).rglob("*.py"))]


def imported_names(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, at module level or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_product_module_imports_the_emulators():
    modules = product_modules()
    assert len(modules) > 50, "the product packages were found"
    importing = sorted(
        str(path.relative_to(ROOT))
        for path in modules
        if any(name == "sandboxes" or name.startswith("sandboxes.") for name in imported_names(path))
    )
    assert importing == []


def test_no_emulator_lives_inside_the_product():
    relative = [str(path.relative_to(ROOT)) for path in product_modules()]
    assert [path for path in relative if "sandbox" in path or "emulator" in path] == []
