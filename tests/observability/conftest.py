"""Observability test helpers: Debian's Prometheus (promtool and a real server), installed
when missing, and the paths of the dashboards and alert rules the Helm chart ships.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

CHART = REPO / "helm" / "swapmeter"
DASHBOARDS = CHART / "dashboards"
ALERTS = CHART / "alerts"
RULES = ALERTS / "swapmeter.rules.yaml"

_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def ensure_prometheus() -> tuple[str, str]:
    """Paths of ``promtool`` and ``prometheus``, installing Debian's ``prometheus`` package
    first when either is missing (as root, with apt-get).

    The package's postinst would start a Prometheus service on :9090 (and its recommended
    node exporter on :9100): recommends are not installed, and a ``policy-rc.d`` that
    refuses every service start is put in place for the install when none is there.
    (To be folded into scripts/test-tools.sh, the project's installer of test tools.)
    """
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if promtool and prometheus:
        return promtool, prometheus
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail("promtool and prometheus are missing: apt-get install prometheus (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    own_policy = not _POLICY_RC_D.exists()
    if own_policy:
        _POLICY_RC_D.write_text("#!/bin/sh\n# swapmeter tests: start no service\nexit 101\n")
        _POLICY_RC_D.chmod(0o755)
    try:
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
    finally:
        if own_policy:
            _POLICY_RC_D.unlink(missing_ok=True)
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    assert promtool and prometheus, "the prometheus package installed no promtool/prometheus"
    return promtool, prometheus


@pytest.fixture(scope="session")
def prometheus_tools() -> tuple[str, str]:
    return ensure_prometheus()
