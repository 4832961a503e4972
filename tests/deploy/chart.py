"""Rendering the Helm chart with Helm itself, and reading what it rendered.

Helm is the Go SDK that the `helm-python-sdk` wheel bundles as a library (`helm_python`):
the same template engine, schema check and linter as the `helm` command, without a
binary to download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "swapmeter"
RELEASE = "swapmeter"
NAMESPACE = "swapmeter"

# The value sets the chart must render with: the defaults, and each optional part on.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "gpu": {
        "worker": {"gpu": {"enabled": True, "count": 2}, "nodeSelector": {"pool": "gpu"}},
        "models": {"fetch": ["yunet"]},
    },
    "autoscaling": {
        "api": {"autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80}},
        "worker": {"keda": {"enabled": True, "minReplicaCount": 0}},
    },
    "monitoring": {
        "metrics": {
            "token": {"existingSecret": "swapmeter-metrics"},
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True},
            "dashboards": {"enabled": True, "annotations": {"grafana_folder": "SwapMeter"}},
        }
    },
    "existing_secret": {
        "secrets": {"existingSecret": "swapmeter-env"},
        "results": {
            "backend": "s3",
            "s3": {"bucket": "swapmeter-results", "region": "eu-west-1", "existingSecret": "s3"},
        },
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "tls": [{"secretName": "swapmeter-tls", "hosts": ["swapmeter.example.com"]}],
        },
    },
}


@dataclass
class Rendered:
    """One rendering of the chart: its manifests, parsed, and the files Helm wrote."""

    files: dict[str, str]  # template path -> rendered text (NOTES.txt included)

    @cached_property
    def docs(self) -> list[dict[str, Any]]:
        out = []
        for path, text in sorted(self.files.items()):
            if path.endswith(".yaml"):
                out += [doc for doc in yaml.safe_load_all(text) if doc]
        return out

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [doc for doc in self.of_kind(kind) if doc["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
        return found[0]

    def kinds(self) -> set[str]:
        return {doc["kind"] for doc in self.docs}

    @property
    def notes(self) -> str:
        return next(text for path, text in self.files.items() if path.endswith("NOTES.txt"))


def render(values: dict[str, Any], chart_dir: Path = CHART_DIR) -> Rendered:
    import helm_python as helm

    with helm.Chart.load(str(chart_dir)) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return Rendered(files)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def documented_values(values_file: Path = CHART_DIR / "values.yaml") -> dict[str, str]:
    """Each value documented with a `# --` comment in values.yaml, by its dotted path,
    with its description (the comment lines that follow the `# --` one included)."""
    documented: dict[str, str] = {}
    path: list[tuple[int, str]] = []
    comment: list[str] | None = None
    for line in values_file.read_text().splitlines():
        text = line.strip()
        if text.startswith("# --"):
            comment = [text[4:].strip()]
            continue
        if text.startswith("#"):
            if comment is not None:
                comment.append(text[1:].strip())
            continue
        key = re.match(r"^( *)([A-Za-z0-9_.\"/-]+):", line)
        if not key:
            continue
        indent = len(key.group(1))
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, key.group(2).strip('"')))
        if comment is not None:
            documented[".".join(k for _, k in path)] = " ".join(comment)
            comment = None
    return documented


def leaf_values(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every value that is not itself a non-empty mapping."""
    leaves = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            leaves += leaf_values(value, dotted + ".")
        else:
            leaves.append(dotted)
    return leaves
