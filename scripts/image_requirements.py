"""Print the requirements of a SwapMeter image: the project's dependencies and the extras
asked for, less the packages named with --without.

Dockerfile.gpu needs it: onnxruntime-gpu (the `gpu` extra) installs the same `onnxruntime`
module as the CPU `onnxruntime` that the project depends on, and with both installed the
last one wins file by file. So the GPU image installs these requirements without
onnxruntime, then the project itself with --no-deps.

    python scripts/image_requirements.py --extras s3,gpu --without onnxruntime
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return canonical(match.group(1))


def image_requirements(
    extras: list[str], without: list[str], pyproject: Path = PYPROJECT
) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise ValueError(f"no such extra in pyproject.toml: {', '.join(unknown)}")
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += optional[extra]
    dropped = {canonical(name) for name in without}
    kept: list[str] = []
    for requirement in requirements:
        if requirement_name(requirement) not in dropped and requirement not in kept:
            kept.append(requirement)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="", help="comma-separated extras to add")
    parser.add_argument("--without", default="", help="comma-separated packages to leave out")
    args = parser.parse_args(argv)
    split = lambda text: [part.strip() for part in text.split(",") if part.strip()]  # noqa: E731
    try:
        print("\n".join(image_requirements(split(args.extras), split(args.without))))
    except ValueError as exc:
        print(f"image_requirements: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
