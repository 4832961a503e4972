"""One class per error code, one for each code of docs/errors.md, none passed as a string."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import app.core.errors
from app.core.errors import AppError, InferenceError

ROOT = Path(__file__).resolve().parents[2]

# One code, two classes: the engine's ``Cancelled`` is how a job's processing stops (never
# an answer), ours the 409 of a canceled job's result.
SHARED_CODES = {
    "Canceled": {"inference.errors.Cancelled", "app.core.errors.codes.Canceled"},
}


def _import_every_module() -> None:
    """Every module of ours, so that a class defined in one that only some code path
    imports (the dashboard's, say) is seen whatever ran before."""
    for package in ("app", "admin", "billing", "inference"):
        root = importlib.import_module(package)
        for module in pkgutil.walk_packages(root.__path__, f"{package}."):
            importlib.import_module(module.name)


def _error_classes() -> dict[str, set[str]]:
    """Code -> the error classes (module.name) that carry it."""
    _import_every_module()
    found: dict[str, set[str]] = {}
    pending: list[type[Exception]] = [AppError, InferenceError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls is AppError or cls.__module__.startswith("tests."):
            continue  # the base (its default code is InternalError's)
        found.setdefault(cls.code, set()).add(f"{cls.__module__}.{cls.__qualname__}")  # type: ignore[attr-defined]
    return found


def _catalogued_codes() -> set[str]:
    """The codes in the first column of docs/errors.md's tables (the catalogue's and the
    per-entry codes')."""
    codes = set()
    for line in (ROOT / "docs" / "errors.md").read_text().splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            codes.update(re.findall(r"`([A-Z][A-Za-z]*)`", cells[1]))
    return codes


def test_each_code_has_one_class() -> None:
    shared = {code: names for code, names in _error_classes().items() if len(names) > 1}
    assert shared == SHARED_CODES


def test_every_code_in_the_catalogue_has_a_class() -> None:
    """The other way round, and each code's status, is tests/test_readme.py's."""
    catalogued = _catalogued_codes()
    assert len(catalogued) > 40  # the parse found the tables
    assert catalogued - _error_classes().keys() == set()


def _string_code_sites() -> set[str]:
    """Calls of an error class that pass ``code=`` or ``status=``: the class is not the code."""
    names = {
        name for name in dir(app.core.errors) if isinstance(getattr(app.core.errors, name), type)
    }
    error_names = {n for n in names if issubclass(getattr(app.core.errors, n), AppError)}
    sites = set()
    for folder in ("app", "billing", "admin"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                keywords = {k.arg for k in node.keywords}
                if name in error_names and keywords & {"code", "status"}:
                    sites.add(f"{path.relative_to(ROOT)}:{node.lineno}")
    return sites


def test_no_error_code_is_passed_as_a_string() -> None:
    """A code is raised as its class (``raise InvalidBase64(...)``), never as a string
    passed to another class, so that each route's declared errors name real classes."""
    assert _string_code_sites() == set()
