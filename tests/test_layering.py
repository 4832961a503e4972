"""The layers of the code, as docs/architecture.md draws them, checked from the imports.

From the bottom: ``inference`` (a pure library: bytes and frames in, frames out), the
kernel ``app/core`` (database, settings, errors, idempotency, audit log, HTTP plumbing),
the domains in a fixed order, each importing only those below it, and the composition
root on top (``app.main``, ``app.routers``, ``app.cli`` and the few modules beside them),
which nothing below imports. Only module-level imports count here: an import inside a
function is a deliberate late binding (the worker loading the engine, say).
"""

from __future__ import annotations

import ast
import re

from tests.conftest import REPO

FIRST_PARTY = ("app", "billing", "admin", "inference")
LIBRARY = "inference"
KERNEL = "app.core"
# Lowest first: a domain may import the kernel, the library and the domains before it.
DOMAINS = ("app.tenancy", "app.auth", "billing", "app.webhooks", "app.jobs", "admin")
ROOT = {
    "app",
    "app.main",
    "app.routers",
    "app.cli",
    "app.startup",
    "app.migrate",
    "app.models",
    "app.embedded",
    "app.middleware",
    "app.docs",
    "app.operations",
}


def _modules() -> dict[str, ast.Module]:
    found = {}
    for package in FIRST_PARTY:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = ast.parse(path.read_text())
    return found


MODULES = _modules()


def _layer(module: str) -> str:
    for layer in (LIBRARY, KERNEL, *DOMAINS):
        if module == layer or module.startswith(layer + "."):
            return layer
    assert module in ROOT, f"{module} is in no layer: place it in docs/architecture.md's map"
    return "root"


def _top_level_imports(tree: ast.Module) -> set[str]:
    """First-party modules imported at module level (``if TYPE_CHECKING:`` blocks too)."""
    nodes: list[ast.stmt] = []
    for node in tree.body:
        nodes.extend([*node.body, *node.orelse] if isinstance(node, ast.If) else [node])
    named: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return {
        name if name in MODULES else name.rsplit(".", 1)[0]
        for name in named
        if name.split(".")[0] in FIRST_PARTY
        and (name in MODULES or name.rsplit(".", 1)[0] in MODULES)
    }


def _allowed(importer: str, imported: str) -> bool:
    low, high = _layer(imported), _layer(importer)
    if low == high or high == "root":
        return True
    if imported in ROOT:
        return False
    order = [LIBRARY, KERNEL, *DOMAINS]
    return order.index(low) < order.index(high)


def test_every_import_points_down_the_layers() -> None:
    wrong = sorted(
        f"{importer} imports {imported}"
        for importer, tree in MODULES.items()
        for imported in _top_level_imports(tree)
        if not _allowed(importer, imported)
    )
    assert wrong == []


def test_the_engine_imports_nothing_of_the_service_even_late() -> None:
    """inference/ is a library the worker drives: not even a function of it reaches up."""
    wrong = sorted(
        f"{name} imports {node.module}"
        for name, tree in MODULES.items()
        if name.startswith(LIBRARY)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.split(".")[0] in FIRST_PARTY
        and not node.module.startswith(LIBRARY)
    )
    assert wrong == []


def test_every_layer_is_used() -> None:
    """The map is the code's: each layer named above has modules (a rename shows here)."""
    layers = {_layer(name) for name in MODULES}
    assert layers == {LIBRARY, KERNEL, *DOMAINS, "root"}


# Statements that move Tokens: an UPDATE of the accounts' balance or held.
MONEY_SQL = re.compile(r"UPDATE\s+accounts\b.*?\bSET\b[^;]*?\b(balance|held)\s*=", re.S | re.I)


def test_only_billing_writes_balances_and_only_billing_reads_its_repositories() -> None:
    outside = {name: tree for name, tree in MODULES.items() if _layer(name) != "billing"}
    money = sorted(
        name
        for name, tree in outside.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and MONEY_SQL.search(node.value)
    )
    assert money == []
    billing_sql = {"billing.repository", "billing.hold_repository"}
    readers = sorted(
        f"{name} imports {node.module}.{alias.name}" if node.module == "billing" else node.module
        for name, tree in outside.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
        if node.module in billing_sql or f"{node.module}.{alias.name}" in billing_sql
    )
    assert readers == []
    # The check can see such a statement: billing's own are there.
    assert any(
        MONEY_SQL.search(node.value)
        for name in billing_sql
        for node in ast.walk(MODULES[name])
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    )
