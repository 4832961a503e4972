"""Runs the README's tour (and docs/api.md's example) against a running `make dev`.

    make dev DEV_ARGS="--port 8437" &      # in the repository root
    .venv/bin/python tests/readme_tour.py --port 8437

The shell blocks of the README's "A tour" section, then those of docs/api.md, run in one
fresh `bash -euo pipefail` from the repository root, exactly as written but for the
port (`PORT=8000` becomes `--port`). Each command followed by `# ...` lines must print
what those lines show, `…` standing for anything and whitespace ignored; a command with no
such lines must print nothing. Not a pytest test: it needs a live `make dev` (the tour
signs in with the admin that `make dev` creates).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARK = "@@tour-step@@"


@dataclass
class Step:
    source: str  # the command, continuation lines included
    expected: str  # the `# ...` lines under it, without the `# `; empty: prints nothing


def shell_blocks(markdown: str, section: str | None) -> list[str]:
    """The ```sh blocks of the markdown, or of one `## section` of it."""
    if section is not None:
        start = markdown.index(f"\n## {section}\n")
        end = markdown.find("\n## ", start + 1)
        markdown = markdown[start : end if end != -1 else None]
    return re.findall(r"^```sh\n(.*?)^```$", markdown, flags=re.S | re.M)


def steps(block: str) -> list[Step]:
    """Commands (joined over trailing backslashes) and the answers written under them."""
    found: list[Step] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            i += 1  # prose comment above a command
            continue
        command = [line]
        while command[-1].endswith("\\"):
            i += 1
            command.append(lines[i])
        i += 1
        expected = []
        while i < len(lines) and lines[i].startswith("#"):
            expected.append(lines[i].removeprefix("#").strip())
            i += 1
        found.append(Step("\n".join(command), " ".join(expected)))
    return found


def matches(expected: str, actual: str) -> bool:
    squeeze = re.compile(r"\s+")
    pattern = ".*?".join(re.escape(part) for part in squeeze.sub("", expected).split("…"))
    return re.fullmatch(pattern, squeeze.sub("", actual), flags=re.S) is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    blocks = shell_blocks((REPO / "README.md").read_text(), "A tour")
    blocks += shell_blocks((REPO / "docs" / "api.md").read_text(), None)
    all_steps = [step for block in blocks for step in steps(block)]
    script = (
        "\n".join(f"{step.source}\nprintf '\\n{MARK}\\n'" for step in all_steps).replace(
            "PORT=8000;", f"PORT={args.port};", 1
        )
        + '\nrm -r "$TMP"\n'
    )

    run = subprocess.run(
        ["bash", "--norc", "--noprofile", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    outputs = run.stdout.split(f"\n{MARK}\n")
    failures = 0
    for n, step in enumerate(all_steps):
        if n >= len(outputs) - 1:
            print(f"NOT RUN  {step.source.splitlines()[0]}")
            failures += 1
            continue
        ok = matches(step.expected, outputs[n])
        failures += not ok
        print(f"{'ok      ' if ok else 'MISMATCH'} {step.source.splitlines()[0]}")
        if not ok:
            print(f"  expected: {step.expected}\n  printed:  {outputs[n]}")
    if run.returncode != 0:
        print(f"bash exited with status {run.returncode}: {outputs[-1]}")
        failures += 1
    print(f"{len(all_steps)} steps, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
