"""Prometheus metrics of the anomaly rules. Labels are bounded: the three rules, the two
actions, the two resolutions."""

from __future__ import annotations

from prometheus_client import Counter

from app.jobs.anomaly.counters import RULES

BREACHES = Counter(
    "swapmeter_anomaly_breaches_total",
    "Breaches of a tenant's anomaly rules recorded as flags, by rule and action (freeze or flag).",
    ["rule", "action"],
)
RESOLUTIONS = Counter(
    "swapmeter_anomaly_flags_resolved_total",
    "Anomaly flags closed by a review, by resolution (unfreeze or keep_frozen).",
    ["resolution"],
)
CHECK_ERRORS = Counter(
    "swapmeter_anomaly_check_errors_total",
    "Swaps let through unchecked because Redis did not answer the anomaly check (fail open).",
)
WEBHOOKS = Counter(
    "swapmeter_anomaly_webhooks_total",
    "Breach webhooks sent to tenants, by outcome (delivered or failed).",
    ["outcome"],
)
# Exported at 0 from the start, so that dashboards and alerts see a series, not "no data".
for _rule in RULES:
    for _action in ("freeze", "flag"):
        BREACHES.labels(_rule, _action)
for _resolution in ("unfreeze", "keep_frozen"):
    RESOLUTIONS.labels(_resolution)
for _outcome in ("delivered", "failed"):
    WEBHOOKS.labels(_outcome)
