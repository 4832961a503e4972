"""The container images' Dockerfiles, linted with hadolint and read against the project.

No container daemon runs here, so the images are not built by the tests: what can be
checked without one is (hadolint, what the Dockerfiles copy and run, the GPU image's
requirements).
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import tomllib

import pytest

from app.cli import build_parser
from scripts.image_requirements import image_requirements, requirement_name
from tests.deploy.chart import REPO_ROOT
from tests.deploy.conftest import tool

DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined."""
    text = (REPO_ROOT / dockerfile).read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage(dockerfile: str) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def hadolint(*paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("hadolint"), "--config", str(REPO_ROOT / ".hadolint.yaml"), *paths],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )


def test_both_dockerfiles_pass_hadolint(tmp_path):
    run = hadolint(*DOCKERFILES)
    assert (run.returncode, run.stdout + run.stderr) == (0, "")
    # The same linter and settings do find the usual mistakes.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11\nRUN pip install flask\nRUN cd /tmp && ls\n")
    run = hadolint(str(bad))
    assert run.returncode == 1
    assert {"DL3013", "DL3042", "DL3003"} <= set(run.stdout.split())


@pytest.mark.parametrize(
    ("dockerfile", "command"), [("Dockerfile", "api"), ("Dockerfile.gpu", "worker")]
)
def test_images_run_swapmeter_as_an_unprivileged_user(dockerfile, command):
    final = final_stage(dockerfile)
    users = [rest for word, rest in final if word == "USER"]
    assert users == ["10001:10001"]  # the chart's runAsUser / runAsGroup
    entrypoint = json.loads(next(rest for word, rest in final if word == "ENTRYPOINT"))
    cmd = json.loads(next(rest for word, rest in final if word == "CMD"))
    assert entrypoint == ["swapmeter"]
    assert build_parser().parse_args(cmd).command == command
    # Multi-stage: the runtime stage takes the virtualenv, not the sources or a compiler.
    assert [rest for word, rest in final if word == "COPY"] == [
        "--from=build /opt/swapmeter /opt/swapmeter"
    ]
    assert sum(word == "FROM" for word, _ in instructions(dockerfile)) == 2


def test_images_hold_every_package_and_no_model():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    ignored = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for dockerfile in DOCKERFILES:
        sources = set()
        for word, rest in instructions(dockerfile):
            if word == "COPY" and not rest.startswith("--from"):
                sources.update(rest.split()[:-1])
        sources = {s.rstrip("/").removeprefix("./") for s in sources}
        assert packages <= sources, f"{dockerfile} leaves out {packages - sources}"
        assert "README.md" in sources  # pyproject's readme: the install needs it
        for source in sources:
            assert (REPO_ROOT / source).exists(), source
            # What a Dockerfile copies must be in the build context.
            hidden = [
                p for p in ignored if fnmatch.fnmatch(source, p) or source.startswith(p + "/")
            ]
            assert not hidden, f"{dockerfile} copies {source}, which .dockerignore leaves out"
        assert not any(s == "models" or s.startswith("models/") for s in sources)
    for kept_out in ("models", ".venv", ".venv-tools", ".git", ".swapmeter", ".env"):
        assert kept_out in ignored


def test_gpu_image_installs_onnxruntime_gpu_instead_of_onnxruntime():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = image_requirements(["s3", "gpu"], ["onnxruntime"])
    names = [requirement_name(r) for r in wanted]
    assert "onnxruntime" not in names
    assert "onnxruntime-gpu" in names and "boto3" in names
    # Every other dependency of the project is still installed.
    base = {requirement_name(r) for r in pyproject["dependencies"]} - {"onnxruntime"}
    assert base <= set(names)
    assert len(names) == len(set(names))
    # The CPU image's plain install keeps the CPU onnxruntime.
    assert "onnxruntime" in {requirement_name(r) for r in image_requirements(["s3"], [])}
    with pytest.raises(ValueError, match="no such extra"):
        image_requirements(["cuda"], [])
    # And Dockerfile.gpu asks for exactly that, then the project without its dependencies.
    runs = " ".join(rest for word, rest in instructions("Dockerfile.gpu") if word == "RUN")
    gpu = " ".join(runs.split())
    assert "image_requirements.py --extras s3,gpu --without onnxruntime" in gpu
    assert "pip install --no-cache-dir --no-deps ." in gpu
