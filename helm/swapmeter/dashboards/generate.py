"""Write SwapMeter's Grafana dashboards (the JSON files beside this script).

    python helm/swapmeter/dashboards/generate.py          # rewrite the JSON files
    python helm/swapmeter/dashboards/generate.py --check  # exit 1 when they differ

Plain Grafana dashboard JSON (schema 39), one file per dashboard, each with a stable
``uid`` and a ``${datasource}`` Prometheus variable; the Helm chart ships them as
ConfigMaps for Grafana's dashboard sidecar. Edit the panels here, not the JSON:
tests/observability checks that the files match this script and that every expression
returns data from a real SwapMeter scraped by a real Prometheus.

Aggregation follows the metrics' help texts: counters and histograms are summed over
every process; cluster-wide gauges (queue, live workers, ledger verification), which
every process exports with the same value, are taken with ``max``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The probes and the scrapes are not customers' traffic.
API = 'route!~"/metrics|/healthz|/readyz"'
RATE = "$__rate_interval"


def target(expr: str, legend: str = "", ref: str = "A") -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": True,
        "refId": ref,
    }


def panel(
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    width: int = 12,
    height: int = 8,
    stack: bool = False,
) -> dict[str, Any]:
    """A panel; ``targets`` are (expression, legend) pairs."""
    refs = "ABCDEFGH"
    defaults: dict[str, Any] = {"unit": unit}
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 10,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        }
        options: dict[str, Any] = {
            "legend": {"calcs": [], "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:  # stat
        options = {
            "colorMode": "value",
            "graphMode": "none",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        }
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(e, legend, refs[i]) for i, (e, legend) in enumerate(targets)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "_size": (width, height),
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]]) -> dict:
    """Lay the panels out left to right, top to bottom, and number them."""
    x = y = line_height = 0
    for number, p in enumerate(panels, start=1):
        width, height = p.pop("_size")
        if x + width > 24 or p["type"] == "row":
            x, y = 0, y + line_height
            line_height = 0
        p["id"] = number
        p["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
        x += width
        line_height = max(line_height, height)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["swapmeter"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "version": 1,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                }
            ]
        },
        "panels": panels,
    }


def quantiles(metric: str, by: str, selector: str = "") -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by ({by}, le) "
            f"(rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"p{int(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def api_dashboard() -> dict:
    requests = "swapmeter_http_requests_total"
    latency = "swapmeter_http_request_duration_seconds"
    return dashboard(
        "swapmeter-api",
        "SwapMeter / API",
        "Request rate, errors and latency by route template (probes and scrapes excluded).",
        [
            row("Traffic and errors"),
            panel(
                "Requests by route",
                "Requests per second by route template.",
                [(f"sum by (route) (rate({requests}{{{API}}}[{RATE}]))", "{{route}}")],
                unit="reqps",
                stack=True,
            ),
            panel(
                "Answers by status",
                "Requests per second by HTTP status.",
                [(f"sum by (status) (rate({requests}{{{API}}}[{RATE}]))", "{{status}}")],
                unit="reqps",
                stack=True,
            ),
            panel(
                "5xx share",
                "Share of requests answered 5xx (the availability SLO allows 0.1%).",
                [
                    (
                        f'1 - sum(rate({requests}{{{API}, status!~"5.."}}[{RATE}])) '
                        f"/ sum(rate({requests}{{{API}}}[{RATE}]))",
                        "5xx share",
                    )
                ],
                unit="percentunit",
                width=8,
            ),
            panel(
                "Client errors by route",
                "4xx answers per second by route and status (402: not enough Tokens, "
                "429: rate limited, 422: invalid request).",
                [
                    (
                        f'sum by (route, status) (rate({requests}{{{API}, status=~"4.."}}'
                        f"[{RATE}]))",
                        "{{status}} {{route}}",
                    )
                ],
                unit="reqps",
                width=8,
            ),
            panel(
                "Errors by code",
                "Error answers per second by contract error code.",
                [
                    (
                        "sum by (code) (rate(swapmeter_http_errors_total[$__rate_interval]))",
                        "{{code}}",
                    )
                ],
                unit="reqps",
                width=8,
            ),
            row("Latency"),
            panel(
                "Latency, all routes",
                "Median, 95th and 99th percentile of request latency.",
                [
                    (
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate({latency}_bucket{{{API}}}[{RATE}])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
                unit="s",
            ),
            panel(
                "Within the latency SLO",
                "Share of requests answered within 2.5 s (swap-face excluded: it waits "
                "for its swap); the SLO is 99%.",
                [
                    (
                        f'sum(rate({latency}_bucket{{{API[:-1]}|/api/v1/swap-face", le="2.5"}}'
                        f'[{RATE}])) / sum(rate({latency}_count{{{API[:-1]}|/api/v1/swap-face"}}'
                        f"[{RATE}]))",
                        "within 2.5 s",
                    )
                ],
                unit="percentunit",
            ),
            panel(
                "p95 latency by route",
                "95th percentile of latency by route template.",
                [
                    (
                        f"histogram_quantile(0.95, sum by (route, le) "
                        f"(rate({latency}_bucket{{{API}}}[{RATE}])))",
                        "{{route}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "p99 latency by route",
                "99th percentile of latency by route template.",
                [
                    (
                        f"histogram_quantile(0.99, sum by (route, le) "
                        f"(rate({latency}_bucket{{{API}}}[{RATE}])))",
                        "{{route}}",
                    )
                ],
                unit="s",
            ),
            row("Dependencies"),
            panel(
                "PostgreSQL reachable",
                "1 when each process's last refresh reached PostgreSQL.",
                [("min by (instance) (swapmeter_database_up)", "{{instance}}")],
                width=8,
            ),
            panel(
                "Redis reachable",
                "1 when each process's last call reached Redis.",
                [("min by (instance) (swapmeter_redis_up)", "{{instance}}")],
                width=8,
            ),
            panel(
                "Unchecked by the rate limiter",
                "Requests let through and job slots granted without a check because Redis "
                "did not answer (fail open).",
                [
                    (
                        "sum by (operation) (rate(swapmeter_ratelimit_fail_open_total"
                        "[$__rate_interval]))",
                        "{{operation}}",
                    )
                ],
                unit="reqps",
                width=8,
            ),
        ],
    )


def billing_dashboard() -> dict:
    moved = "swapmeter_tokens_moved_total"
    return dashboard(
        "swapmeter-billing",
        "SwapMeter / Billing",
        "Tokens moved by kind and tenant, recharges, refusals for lack of Tokens and the "
        "ledger's verification.",
        [
            row("Tokens"),
            panel(
                "Tokens moved by kind",
                "Tokens per hour by ledger entry kind (hold and release count reservations; "
                "capture is what was charged; expire: grant Tokens that expired).",
                [(f"sum by (kind) (rate({moved}[{RATE}])) * 3600", "{{kind}}")],
                unit="short",
            ),
            panel(
                "Tokens captured in the range",
                "Tokens charged for finished swaps over the dashboard's time range.",
                [(f'sum(increase({moved}{{kind="capture"}}[$__range]))', "captured")],
                kind="stat",
                width=6,
            ),
            panel(
                "Tokens recharged in the range",
                "Tokens added by recharges over the dashboard's time range.",
                [(f'sum(increase({moved}{{kind="recharge"}}[$__range]))', "recharged")],
                kind="stat",
                width=6,
            ),
            panel(
                "Tokens captured by tenant (top 10)",
                "Tokens per hour charged, for the ten tenants spending most.",
                [
                    (
                        f'topk(10, sum by (tenant) (rate({moved}{{kind="capture"}}[{RATE}])))'
                        " * 3600",
                        "{{tenant}}",
                    )
                ],
            ),
            panel(
                "Tokens recharged by tenant (top 10)",
                "Tokens per hour added by recharges, for the ten tenants recharging most.",
                [
                    (
                        f'topk(10, sum by (tenant) (rate({moved}{{kind="recharge"}}[{RATE}])))'
                        " * 3600",
                        "{{tenant}}",
                    )
                ],
            ),
            panel(
                "Tokens held by open jobs",
                "Tokens reserved by jobs queued or running, which customers cannot spend "
                "until their jobs end.",
                [("max by (kind) (swapmeter_jobs_tokens_held)", "{{kind}}")],
            ),
            panel(
                "Grant Tokens expired",
                "Grant Tokens per hour that expired unspent.",
                [(f'sum(rate({moved}{{kind="expire"}}[{RATE}])) * 3600', "expired")],
            ),
            row("Recharges and refusals"),
            panel(
                "Bulk recharge batches",
                "Batches per hour by outcome (applied, pending approval, rejected).",
                [
                    (
                        "sum by (status) (rate(swapmeter_bulk_recharge_batches_total"
                        f"[{RATE}])) * 3600",
                        "{{status}}",
                    )
                ],
                width=8,
            ),
            panel(
                "Recharge entries refused",
                "Entries of bulk recharges refused per hour, by error code.",
                [
                    (
                        "sum by (code) (rate(swapmeter_bulk_recharge_failed_entries_total"
                        f"[{RATE}])) * 3600",
                        "{{code}}",
                    )
                ],
                width=8,
            ),
            panel(
                "402 Insufficient balance",
                "Requests per second refused because the user had too few Tokens.",
                [
                    (
                        'sum(rate(swapmeter_http_errors_total{code="InsufficientBalance"}'
                        f"[{RATE}]))",
                        "402",
                    )
                ],
                unit="reqps",
                width=8,
            ),
            row("Ledger verification"),
            panel(
                "Ledger verifies",
                "1 when the latest whole-ledger verification found nothing wrong.",
                [("max(swapmeter_ledger_verify_ok)", "ok")],
                kind="stat",
                width=6,
            ),
            panel(
                "Last verification",
                "Time since the latest whole-ledger verification (hourly by default).",
                [
                    (
                        "time() - max(swapmeter_ledger_verify_last_run_timestamp_seconds)",
                        "age",
                    )
                ],
                kind="stat",
                unit="s",
                width=6,
            ),
            panel(
                "Verification time",
                "How long the latest whole-ledger verification took.",
                [("max(swapmeter_ledger_verify_duration_seconds)", "duration")],
                kind="stat",
                unit="s",
                width=6,
            ),
            panel(
                "Holds left open",
                "Holds still open whose job ended (or that have none), older than the job lease.",
                [("max(swapmeter_holds_open_stale)", "holds")],
                kind="stat",
                width=6,
            ),
            panel(
                "Mismatches by check",
                "What the latest verification found, by check (zero_sum: a tenant's "
                "accounts do not add up to zero).",
                [("max by (check) (swapmeter_ledger_verify_mismatches)", "{{check}}")],
                width=24,
            ),
        ],
    )


def workers_dashboard() -> dict:
    return dashboard(
        "swapmeter-workers",
        "SwapMeter / Workers and inference",
        "The job queue, run times, inference stages, workers and their GPUs.",
        [
            row("Queue"),
            panel(
                "Jobs queued",
                "Jobs waiting for a worker, by kind.",
                [("max by (kind) (swapmeter_jobs_in_queue)", "{{kind}}")],
                width=8,
            ),
            panel(
                "Jobs processing",
                "Jobs leased by a worker, by kind.",
                [("max by (kind) (swapmeter_jobs_processing)", "{{kind}}")],
                width=8,
            ),
            panel(
                "Oldest queued job",
                "How long the oldest job a worker could take has waited (tenant caps aside).",
                [("max by (kind) (swapmeter_jobs_oldest_queued_seconds)", "{{kind}}")],
                unit="s",
                width=8,
            ),
            panel(
                "Claim wait",
                "From a job's creation to a worker claiming it.",
                quantiles("swapmeter_job_queue_wait_seconds", "kind"),
                unit="s",
            ),
            panel(
                "Run time",
                "From a worker claiming a job to its final status.",
                quantiles("swapmeter_job_run_seconds", "kind"),
                unit="s",
            ),
            panel(
                "Jobs finished",
                "Jobs per second reaching a final status, by kind and status.",
                [
                    (
                        f"sum by (kind, status) (rate(swapmeter_jobs_finished_total[{RATE}]))",
                        "{{kind}} {{status}}",
                    )
                ],
                unit="ops",
            ),
            panel(
                "Job failures by code",
                "Failed jobs per second by error code (NoFaceDetected is the customer's "
                "input; InternalError and WorkerLost are ours).",
                [
                    (
                        'sum by (code) (rate(swapmeter_jobs_finished_total{status="failed"}'
                        f"[{RATE}]))",
                        "{{code}}",
                    )
                ],
                unit="ops",
            ),
            row("Inference"),
            panel(
                "Stage time, p95",
                "95th percentile of engine time per stage of one job.",
                [
                    (
                        "histogram_quantile(0.95, sum by (stage, le) "
                        f"(rate(swapmeter_inference_stage_seconds_bucket[{RATE}])))",
                        "{{stage}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Stage time, median",
                "Median engine time per stage of one job.",
                [
                    (
                        "histogram_quantile(0.5, sum by (stage, le) "
                        f"(rate(swapmeter_inference_stage_seconds_bucket[{RATE}])))",
                        "{{stage}}",
                    )
                ],
                unit="s",
            ),
            row("Workers"),
            panel(
                "Live workers",
                "Worker processes whose heartbeat is recent.",
                [("max(swapmeter_workers_live)", "workers")],
                kind="stat",
                width=6,
            ),
            panel(
                "Jobs running",
                "Jobs running now, by kind, over every process.",
                [("sum by (kind) (swapmeter_jobs_running)", "{{kind}}")],
                width=9,
            ),
            panel(
                "Webhook deliveries",
                "Webhook deliveries per second by outcome.",
                [
                    (
                        f"sum by (outcome) (rate(swapmeter_webhook_deliveries_total[{RATE}]))",
                        "{{outcome}}",
                    )
                ],
                unit="ops",
                width=9,
            ),
            row("GPUs"),
            panel(
                "GPUs",
                "NVIDIA GPUs the workers see (0: CPU workers, or no nvidia-ml-py).",
                [("sum(swapmeter_gpu_devices)", "GPUs")],
                kind="stat",
                width=4,
            ),
            panel(
                "GPU utilisation",
                "Share of time each GPU was running kernels.",
                [
                    (
                        "max by (instance, gpu) (swapmeter_gpu_utilization_ratio)",
                        "{{instance}} {{gpu}}",
                    )
                ],
                unit="percentunit",
                width=10,
            ),
            panel(
                "GPU memory",
                "GPU memory in use, and in all.",
                [
                    (
                        "max by (instance, gpu) (swapmeter_gpu_memory_used_bytes)",
                        "used {{instance}} {{gpu}}",
                    ),
                    (
                        "max by (instance, gpu) (swapmeter_gpu_memory_total_bytes)",
                        "total {{instance}} {{gpu}}",
                    ),
                ],
                unit="bytes",
                width=10,
            ),
        ],
    )


def policies_dashboard() -> dict:
    refills = "swapmeter_plan_refills_total"
    breaches = "swapmeter_anomaly_breaches_total"
    at_peak = "swapmeter_tokens_held_at_peak_total"
    # The daily refill runs once a day per plan: its panels count over the past hour, so
    # that a refill shows for an hour rather than for one rate interval.
    hour = "1h"
    return dashboard(
        "swapmeter-policies",
        "SwapMeter / Token policies",
        "Plans' daily refill, the anomaly rules' breaches and checks, and load pricing: "
        "the peak multiplier in force, Tokens held at peak and the queue depth priced with.",
        [
            row("Daily refill"),
            panel(
                "Plan refills by outcome",
                "Plan refills over the past hour: done (a plan's day paid to every user "
                "due; once a day per plan, and when a plan is written) and failed (retried "
                "by the next housekeeping round).",
                [(f"sum by (outcome) (increase({refills}[{hour}]))", "{{outcome}}")],
                width=8,
            ),
            panel(
                "Users refilled",
                "Users whose daily grant a plan refill topped up, over the past hour.",
                [(f"sum(increase(swapmeter_plan_refill_users_total[{hour}]))", "users")],
                width=8,
            ),
            panel(
                "Tokens granted by refills",
                "Tokens granted by plan refills (daily grants), over the past hour; what "
                "was left of the previous day's grant expires at the refill (billing "
                "dashboard, Grant Tokens expired).",
                [(f"sum(increase(swapmeter_plan_refill_tokens_total[{hour}]))", "Tokens")],
                width=8,
            ),
            panel(
                "Refill time",
                "How long a plan's refill took, all its chunks: median, 95th percentile and "
                "mean over the past hour.",
                [
                    *(
                        (
                            f"histogram_quantile({q}, sum by (le) "
                            f"(increase(swapmeter_plan_refill_duration_seconds_bucket[{hour}])))",
                            f"p{int(q * 100)}",
                        )
                        for q in (0.5, 0.95)
                    ),
                    (
                        f"sum(increase(swapmeter_plan_refill_duration_seconds_sum[{hour}])) "
                        f"/ sum(increase(swapmeter_plan_refill_duration_seconds_count[{hour}]))",
                        "mean",
                    ),
                ],
                unit="s",
            ),
            panel(
                "Refills in the range",
                "Plan refills done and failed over the dashboard's time range.",
                [(f"sum by (outcome) (increase({refills}[$__range]))", "{{outcome}}")],
                kind="stat",
                width=6,
            ),
            panel(
                "Tokens granted in the range",
                "Tokens granted by plan refills over the dashboard's time range.",
                [("sum(increase(swapmeter_plan_refill_tokens_total[$__range]))", "granted")],
                kind="stat",
                width=6,
            ),
            row("Anomaly rules"),
            panel(
                "Breaches by rule and action",
                "Breaches of tenants' anomaly rules recorded as flags, per hour, by rule and "
                "action (freeze: the user was frozen and the swap refused; flag: review only).",
                [
                    (
                        f"sum by (rule, action) (rate({breaches}[{RATE}])) * 3600",
                        "{{rule}} {{action}}",
                    )
                ],
                stack=True,
            ),
            panel(
                "Breaches in the range",
                "Breaches over the dashboard's time range, by action.",
                [(f"sum by (action) (increase({breaches}[$__range]))", "{{action}}")],
                kind="stat",
                width=6,
            ),
            panel(
                "Flags resolved",
                "Anomaly flags closed by a review, per hour, by resolution (unfreeze, "
                "keep_frozen).",
                [
                    (
                        "sum by (resolution) (rate(swapmeter_anomaly_flags_resolved_total"
                        f"[{RATE}])) * 3600",
                        "{{resolution}}",
                    )
                ],
                width=6,
            ),
            panel(
                "Unchecked by the anomaly rules",
                "Swaps per second let through without an anomaly check because Redis did "
                "not answer (fail open): the rules are not enforced.",
                [
                    (
                        f"sum(rate(swapmeter_anomaly_check_errors_total[{RATE}]))",
                        "unchecked",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Breach webhooks",
                "Breach webhooks sent to tenants per second, by outcome.",
                [
                    (
                        f"sum by (outcome) (rate(swapmeter_anomaly_webhooks_total[{RATE}]))",
                        "{{outcome}}",
                    )
                ],
                unit="ops",
            ),
            row("Load pricing"),
            panel(
                "Peak multiplier by tenant",
                "The peak multiplier in force when each tenant last priced a swap or a "
                "quote (1: under its threshold); only tenants whose price book has a peak. "
                "The highest over the API processes.",
                [("max by (tenant) (swapmeter_price_multiplier)", "{{tenant}}")],
            ),
            panel(
                "Queue depth priced with",
                "The queue depth (jobs queued, cluster-wide) the API processes last priced a "
                "peak-priced swap or quote with, counted at most once a second.",
                [("max(swapmeter_pricing_queue_depth)", "queue depth")],
            ),
            panel(
                "Tokens held at peak by tenant (top 10)",
                "Tokens per hour held by swaps priced at a peak multiplier above 1 (the "
                "whole hold, base price included), for the ten tenants holding most.",
                [(f"topk(10, sum by (tenant) (rate({at_peak}[{RATE}]))) * 3600", "{{tenant}}")],
            ),
            panel(
                "Share of held Tokens at peak",
                "Tokens held at a peak multiplier above 1, as a share of all Tokens held.",
                [
                    (
                        f"sum(rate({at_peak}[{RATE}])) "
                        f'/ sum(rate(swapmeter_tokens_moved_total{{kind="hold"}}[{RATE}]))',
                        "at peak",
                    )
                ],
                unit="percentunit",
                width=8,
            ),
            panel(
                "Holds at peak",
                "Holds made at a peak multiplier above 1, per hour.",
                [(f"sum(rate(swapmeter_holds_at_peak_total[{RATE}])) * 3600", "holds")],
                width=8,
            ),
            panel(
                "Tokens held at peak in the range",
                "Tokens held at a peak multiplier over the dashboard's time range.",
                [(f"sum(increase({at_peak}[$__range]))", "at peak")],
                kind="stat",
                width=8,
            ),
        ],
    )


DASHBOARDS = {
    "swapmeter-api.json": api_dashboard,
    "swapmeter-billing.json": billing_dashboard,
    "swapmeter-workers.json": workers_dashboard,
    "swapmeter-policies.json": policies_dashboard,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, build in DASHBOARDS.items():
        path = HERE / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
