"""Modules and functions stay small enough to read: at most 500 lines a module and 80 a
function in the service's packages, unless a comment at the top of the function says why
(``# long: <reason>``)."""

from __future__ import annotations

import ast

from tests.conftest import REPO

PACKAGES = ("app", "billing", "admin", "inference")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _files() -> list:
    return [path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))]


def test_no_module_is_over_500_lines() -> None:
    long = {
        str(path.relative_to(REPO)): lines
        for path in _files()
        if (lines := path.read_text().count("\n")) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_80_lines_without_a_reason() -> None:
    long = {}
    for path in _files():
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = node.end_lineno - node.lineno + 1
            body_start = node.body[0].lineno - 1
            head = "\n".join(lines[node.lineno - 1 : body_start + 2])
            if length > MAX_FUNCTION_LINES and "# long:" not in head:
                long[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = length
    assert long == {}
