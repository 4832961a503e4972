"""The alert rules and dashboards as files: promtool accepts the rules and their unit tests
fire every alert; every alert has its summary, description and a runbook paragraph; the
dashboards are what their generator writes, with stable uids and the datasource variable.
(tests/observability/test_prometheus_scrape.py runs them against a real SwapMeter.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml

from tests.conftest import REPO
from tests.observability.conftest import ALERTS, DASHBOARDS, RULES

RUNBOOKS = REPO / "docs" / "runbooks.md"
UIDS = {
    "swapmeter-api.json": "swapmeter-api",
    "swapmeter-billing.json": "swapmeter-billing",
    "swapmeter-workers.json": "swapmeter-workers",
    "swapmeter-policies.json": "swapmeter-policies",
}


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_promtool_accepts_the_rules(prometheus_tools) -> None:
    promtool, _ = prometheus_tools
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_promtool_unit_tests_fire_every_alert(prometheus_tools) -> None:
    promtool, _ = prometheus_tools
    tests = sorted((ALERTS / "tests").glob("*.yaml"))
    assert tests
    ran = subprocess.run(
        [promtool, "test", "rules", *(t.name for t in tests)],
        cwd=ALERTS / "tests",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    fired = {
        case["alertname"]
        for test in tests
        for group in yaml.safe_load(test.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_every_alert_says_what_happened_and_links_its_runbook_paragraph() -> None:
    anchors = github_anchors(RUNBOOKS.read_text())
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/runbooks.md" and anchor in anchors, rule["alert"]


def test_the_dashboards_are_what_their_generator_writes() -> None:
    generator = DASHBOARDS / "generate.py"
    checked = subprocess.run(
        [sys.executable, str(generator), "--check"], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr
    assert {p.name for p in DASHBOARDS.glob("*.json")} == set(UIDS)


def test_dashboards_have_stable_uids_and_ask_for_their_prometheus() -> None:
    for name, uid in UIDS.items():
        board = json.loads((DASHBOARDS / name).read_text())
        assert board["uid"] == uid
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert panels
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for p in panels:
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
