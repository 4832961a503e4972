"""The API side of the swap never imports the worker's side: neither the routes nor the
intake reach ``app.jobs.runner`` or ``app.jobs.worker`` (which load the engine and run
jobs), through any chain of imports, also imports inside functions."""

from __future__ import annotations

import ast

from tests.conftest import REPO

FIRST_PARTY = ("app", "billing", "admin", "inference")
WORKER_SIDE = {"app.jobs.runner", "app.jobs.worker"}
API_SIDE = (
    "app.jobs.endpoints",
    "app.jobs.job_endpoints",
    "app.jobs.quote_endpoints",
    "app.jobs.result_endpoints",
    "app.jobs.intake",
    "app.jobs.media",
    "app.webhooks.endpoints",
)


def _source(module: str) -> str | None:
    for path in (
        REPO / f"{module.replace('.', '/')}.py",
        REPO / module.replace(".", "/") / "__init__.py",
    ):
        if path.exists():
            return path.read_text()
    return None


def _imports(module: str) -> set[str]:
    """First-party modules ``module`` imports (with the packages above them)."""
    source = _source(module)
    if source is None:
        return set()
    named: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named.add(node.module)
            named |= {f"{node.module}.{alias.name}" for alias in node.names}
    found = set()
    for name in named:
        parts = name.split(".")
        if parts[0] in FIRST_PARTY:
            prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
            found |= {p for p in prefixes if _source(p) is not None}
    return found


def _reached(start: str) -> dict[str, str]:
    """Every module ``start`` reaches, each with the module that imports it."""
    via: dict[str, str] = {start: ""}
    todo = [start]
    while todo:
        module = todo.pop()
        for name in _imports(module):
            if name not in via:
                via[name] = module
                todo.append(name)
    return via


def test_the_api_side_of_a_swap_never_imports_the_worker_side() -> None:
    for start in API_SIDE:
        via = _reached(start)
        assert len(via) > 5, f"{start}: its imports were not followed"
        for module in WORKER_SIDE & via.keys():
            chain = [module]
            while via[chain[-1]]:
                chain.append(via[chain[-1]])
            raise AssertionError(f"{start} imports {module}: {' <- '.join(chain)}")
