"""The house rules a reader relies on, checked on the source: no import cycles and none hidden inside
functions, ``customers`` never importing ``integrations``, one scope permission class for the API, and
one module writing the write-back state of cross references."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.permissions import AllowAny

from hub.api.permissions import HasScope

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("hub", "customers", "integrations")

# In-function imports Django (or the import itself) requires, and why.
ALLOWED_IN_FUNCTIONS = {
    # apps.py is imported while Django loads the apps, before a model may be imported: what imports
    # models is imported in ready() or when post_migrate fires.
    "integrations/apps.py": {"django_q.models", "integrations.resolver", "integrations"},
    "integrations/marketing_cloud/apps.py": {
        "django_q.models",
        "integrations.marketing_cloud.poller",
        "integrations.marketing_cloud.status_sync",
        "integrations.marketing_cloud",
    },
    "integrations/downstream/apps.py": {"integrations.downstream"},
    # pgserver reads its runtime directory at import (set just before), and production lacks it.
    "hub/embedded_pg.py": {"pgserver"},
}


def product_files() -> dict[str, Path]:
    """Module name -> file, migrations left out (Django imports them itself)."""
    files = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def imports_of(name: str, path: Path) -> list[tuple[int, str, list[str], bool]]:
    """(line, module, the names it may stand for, inside a function) for every import in the file."""
    is_package = path.name == "__init__.py"
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name, [alias.name], inside) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[: len(package) - child.level + 1]
                    base = ".".join([*package, base] if base else package)
                # ``from a import b``: b may be a module of its own.
                found.append((child.lineno, base, [base, *(f"{base}.{a.name}" for a in child.names)], inside))
            visit(child, inside)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def import_graph() -> dict[str, set[str]]:
    files = product_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        for _, _, targets, _ in imports_of(name, path):
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def test_no_import_cycle_among_the_product_modules_counting_imports_inside_functions():
    graph = import_graph()
    assert len(graph) > 50 and "customers.admin.records" in graph
    assert cycles(graph) == []


def test_imports_sit_inside_functions_only_where_django_requires_it():
    hidden = sorted(
        f"{path.relative_to(ROOT)}:{line} {module}"
        for name, path in product_files().items()
        for line, module, _, inside in imports_of(name, path)
        if inside and module not in ALLOWED_IN_FUNCTIONS.get(str(path.relative_to(ROOT)), set())
    )
    assert hidden == []


def test_customers_never_imports_integrations():
    graph = import_graph()
    crossing = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == "customers"
        for target in targets
        if target.split(".")[0] == "integrations"
    )
    assert crossing == []


def test_the_api_has_one_scope_permission_class():
    defined = sorted(
        f"{path.relative_to(ROOT)}:{node.name}"
        for path in product_files().values()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and any(ast.unparse(base).endswith("BasePermission") for base in node.bases)
    )
    assert defined == ["hub/api/permissions.py:HasScope"]


def _routed_views(patterns: list, prefix: str = "") -> list[tuple[str, type]]:
    views = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            views += _routed_views(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern) and hasattr(pattern.callback, "cls"):
            views.append((prefix + str(pattern.pattern), pattern.callback.cls))
    return views


def test_every_api_view_names_its_scope_or_opens_itself_explicitly():
    views = [(route, cls) for route, cls in _routed_views(get_resolver().url_patterns) if route.startswith("api/")]
    assert len(views) > 10
    for route, cls in views:
        view = cls()
        permissions = [type(p) for p in view.get_permissions()]
        if permissions == [HasScope]:
            assert getattr(cls, "required_scope", None), f"{route}: {cls.__name__} names no required_scope"
        else:
            # Open to other authentication (a JWT, an HMAC signature) or to anyone (health, schema).
            assert permissions in ([AllowAny], []), (route, cls.__name__, permissions)


WRITEBACK_COLUMNS = {"writeback_state", "writeback_due_at", "writeback_attempts", "writeback_error"}
WRITEBACK_OWNERS = {"customers/writeback_state.py", "customers/resolution/store.py"}


def test_only_the_write_back_state_module_and_the_unit_of_work_write_the_write_back_columns():
    writers = sorted(
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in product_files().values()
        if str(path.relative_to(ROOT)) not in WRITEBACK_OWNERS
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("update", "bulk_update", "create", "update_or_create")
        and {k.arg for k in node.keywords} & WRITEBACK_COLUMNS
    )
    assert writers == []


@pytest.mark.parametrize("name", sorted(ALLOWED_IN_FUNCTIONS))
def test_the_allowed_in_function_imports_are_still_there(name):
    """An allowance that nothing uses any more goes (so the list stays the truth)."""
    module = ".".join(Path(name).with_suffix("").parts)
    inside = {imported for _, imported, _, within in imports_of(module, ROOT / name) if within}
    assert ALLOWED_IN_FUNCTIONS[name] <= inside
