"""The README and docs/ say what the code does: their links resolve, and the error
catalogue in docs/errors.md lists every code the service answers with, at its status.

The tour itself needs a live `make dev`: tests/readme_tour.py runs it.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from app.core.errors import INFERENCE_STATUS, AppError
from inference.errors import InferenceError

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PACKAGES = ("app", "billing", "admin", "inference")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_anchor(h) for h in re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)}


def _local_links(page: Path) -> list[tuple[str, str]]:
    """(path relative to the repository, anchor or "") of each markdown link to a file."""
    links = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page.resolve()
        links.append((resolved.relative_to(REPO).as_posix(), anchor))
    return links


def test_readme_and_docs_links_lead_to_existing_pages_and_headings() -> None:
    pages = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
    readme_docs = {path for path, _ in _local_links(REPO / "README.md")}
    assert {"docs/configuration.md", "docs/operations.md", "docs/errors.md"} <= readme_docs
    assert {"docs/api.md", "docs/architecture.md", "docs/runbooks.md"} <= readme_docs
    broken = []
    for page in pages:
        for path, anchor in _local_links(page):
            target = REPO / path
            if not target.is_file():
                broken.append(f"{page.name}: {path} does not exist")
            elif anchor and anchor not in _anchors(target):
                broken.append(f"{page.name}: {path} has no heading #{anchor}")
    assert broken == []


def _catalogue() -> dict[str, int]:
    """Code -> status of the catalogue table in docs/errors.md."""
    text = (DOCS / "errors.md").read_text()
    section = text.split("\n## Catalogue\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\d{3}) \|", section, flags=re.M)
    codes = dict((code, int(status)) for code, status in rows)
    assert len(codes) == len(rows), "a code is listed twice"
    return codes


def _per_entry_codes() -> set[str]:
    text = (DOCS / "errors.md").read_text()
    section = text.split("\n## Per-entry codes\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", section, flags=re.M))


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _import_everything() -> None:
    """Error classes live beside the code that raises them: import it all to see them."""
    for name in PACKAGES:
        package = importlib.import_module(name)
        for module in pkgutil.walk_packages(package.__path__, f"{name}."):
            importlib.import_module(module.name)


def _source() -> str:
    return "\n".join(
        path.read_text() for name in PACKAGES for path in sorted((REPO / name).rglob("*.py"))
    )


def _status_table(source: str) -> list[tuple[str, str]]:
    """(status, code) of each `404: "NotFound"` entry in the source."""
    return re.findall(r'\b([1-5]\d\d): "([A-Z]\w+)"', source)


def test_every_documented_error_code_is_one_the_code_uses_with_that_status() -> None:
    _import_everything()
    documented = _catalogue()
    statuses: dict[str, int] = dict(INFERENCE_STATUS)
    for cls in _subclasses(AppError):
        if "code" in vars(cls) or "status" in vars(cls):
            statuses[cls.code] = cls.status
    # Statuses raised by the framework itself, mapped to codes (405 -> MethodNotAllowed).
    statuses.update((code, int(status)) for status, code in _status_table(_source()))
    wrong = {
        code: (status, statuses[code])
        for code, status in documented.items()
        if code in statuses and statuses[code] != status
    }
    assert wrong == {}, "code: (documented status, real status)"

    source = _source()
    unused = [
        code
        for code in [*documented, *_per_entry_codes()]
        if code not in statuses and f'"{code}"' not in source
    ]
    assert unused == []


def test_every_error_code_the_code_declares_is_documented() -> None:
    _import_everything()
    declared = set(INFERENCE_STATUS) | {AppError.code, InferenceError.code}
    declared |= {code for _, code in _status_table(_source())}
    declared |= {cls.code for cls in _subclasses(AppError)}
    declared |= {cls.code for cls in _subclasses(InferenceError)}
    declared |= set(re.findall(r'\bcode="(\w+)"', _source()))
    documented = set(_catalogue()) | _per_entry_codes()
    assert sorted(declared - documented) == []
