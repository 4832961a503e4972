"""The chart rendered once per value set for the whole session, and the tools that check it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy.chart import REPO_ROOT, VALUE_SETS, Rendered, render


def tool(name: str) -> str:
    """A checking tool from .venv-tools/ or .venv/ (scripts/test-tools.sh and the dev
    extra install them), else from PATH; a missing one fails the test, never skips it."""
    for folder in (REPO_ROOT / ".venv-tools" / "bin", REPO_ROOT / ".venv" / "bin"):
        if (folder / name).is_file():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/test-tools.sh (make test does)")
    return found


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    return {name: render(values) for name, values in VALUE_SETS.items()}


@pytest.fixture(scope="session")
def rendered_dir(rendered: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every value set's manifests as files, one folder per set (for checkov)."""
    root = tmp_path_factory.mktemp("rendered")
    for name, result in rendered.items():
        folder = root / name
        folder.mkdir()
        for path, text in result.files.items():
            if path.endswith(".yaml") and text.strip():
                (folder / path.replace("/", "_")).write_text(text)
    return root
