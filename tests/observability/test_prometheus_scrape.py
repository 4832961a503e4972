"""A real Prometheus scraping a real SwapMeter: `swapmeter api --workers 2` and a
`swapmeter worker` on a database of their own, after real swaps, recharges, a failed job
and a refusal for lack of Tokens. Their /metrics want a bearer token (SWAPMETER_METRICS_TOKEN),
which Prometheus sends.

A second tenant has a plan, whose daily refill the worker runs, and a peak price book
(multiplier 2 from one queued job): its user's swaps are sent without waiting until one is
held at the peak price, so that the Token-policy metrics have something to count.

Checks that the counters equal what was done (whichever API process served each
request), that every metric named by a dashboard panel or an alert rule is one SwapMeter
exports (a typo fails here), that every panel's expression returns data, that Prometheus
evaluates every rule without error and pages for nothing on a healthy system, and that
JSON logs carry the request, tenant and job ids.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from app.core import gpu_metrics
from app.migrate import upgrade_to_head
from tests.conftest import MODELS_DIR, REPO, TEST_JWT_SECRET, server_sql
from tests.jobs.conftest import face, free_port, gradient_png
from tests.observability.conftest import DASHBOARDS, RULES

ROOT = {"email": "root@obs.test", "password": "observability-root-1"}
OBAMA = base64.b64encode(face("obama.jpg")).decode()
BIDEN = base64.b64encode(face("biden.jpg")).decode()
FACELESS = base64.b64encode(gradient_png()).decode()
BALANCE_READS = 12
DAILY_TOKENS = 100  # the peak tenant's plan: enough for every rushed swap at twice the price
MAX_RUSHED = 40  # the queue depth is read once a second: keep sending past that
# SWAPMETER_METRICS_TOKEN of the stack: Prometheus scrapes with it, as an operator's would.
METRICS_TOKEN = "observability-scrape-token"
SCRAPE_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
# Panels whose expression needs an event this scenario does not make: their metric names
# are still checked, only an empty answer is accepted.
NO_DATA_EXPECTED = {
    "Grant Tokens expired": "no grant Tokens expire here",
    "GPU utilisation": "only with a GPU",
    "GPU memory": "only with a GPU",
}
# Grafana's variables, as Grafana would fill them in for a short range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "10m", "$__interval": "15s"}
METRIC_NAME = re.compile(r"\bswapmeter_[a-z0-9_]+\b")


@dataclass
class Stack:
    api: str
    prometheus: str
    database_url: str
    api_log: Path
    worker_log: Path


@pytest.fixture(scope="module")
def obs_database(servers: tuple[str, str]) -> Iterator[str]:
    """A database of this module's own: every counter here starts from zero, so it must
    equal the database's totals."""
    server_url, _ = servers
    name = f"swapmeter_obs_{uuid.uuid4().hex[:12]}"
    server_sql(server_url, f'CREATE DATABASE "{name}"')
    url = server_url.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade_to_head(url)
        yield url
    finally:
        server_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait_until(check: Any, what: str, timeout_s: float, processes: list) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for process in processes:
            assert process.poll() is None, f"{process.args[:4]} exited while waiting for {what}"
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(
    obs_database: str,
    redis_url: str,
    prometheus_tools: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    _, prometheus = prometheus_tools
    tmp = tmp_path_factory.mktemp("observability")
    api_port, worker_port, prometheus_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "SWAPMETER_ENVIRONMENT": "test",
        "SWAPMETER_DATABASE_URL": obs_database,
        "SWAPMETER_REDIS_URL": redis_url,
        "SWAPMETER_JWT_SECRET": TEST_JWT_SECRET,
        "SWAPMETER_DATA_DIR": str(tmp),
        "SWAPMETER_RESULTS_DIR": str(tmp / "results"),
        "SWAPMETER_MODELS_DIR": str(MODELS_DIR),
        "SWAPMETER_BOOTSTRAP_ADMIN_EMAIL": ROOT["email"],
        "SWAPMETER_BOOTSTRAP_ADMIN_PASSWORD": ROOT["password"],
        "SWAPMETER_JOBS_POLL_SECONDS": "0.5",
        "SWAPMETER_JOBS_HOUSEKEEPING_SECONDS": "0.5",
        "SWAPMETER_LOG_FORMAT": "json",
        "SWAPMETER_LOG_LEVEL": "INFO",
        "SWAPMETER_METRICS_TOKEN": METRICS_TOKEN,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "swapmeter-api",
                "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}],
                "authorization": {"type": "Bearer", "credentials": METRICS_TOKEN},
            },
            {
                "job_name": "swapmeter-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                "authorization": {"type": "Bearer", "credentials": METRICS_TOKEN},
            },
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    api_log, worker_log = tmp / "api.log", tmp / "worker.log"
    cli = [sys.executable, "-m", "app.cli"]
    commands = [
        (cli + ["api", "--workers", "2", "--host", "127.0.0.1", "--port", str(api_port)], api_log),
        (cli + ["worker", "--concurrency", "1", "--metrics-port", str(worker_port)], worker_log),
        (
            [
                prometheus,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                "--log.level=warn",
            ],
            tmp / "prometheus.log",
        ),
    ]
    started: list[subprocess.Popen[bytes]] = []
    try:
        for command, log in commands:
            with log.open("wb") as out:
                started.append(
                    subprocess.Popen(
                        command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
                    )
                )
        api = f"http://127.0.0.1:{api_port}"
        prom = f"http://127.0.0.1:{prometheus_port}"
        _wait_until(
            lambda: httpx.get(f"{api}/readyz", timeout=2).status_code == 200, "the API", 90, started
        )
        _wait_until(
            lambda: (
                httpx.get(
                    f"http://127.0.0.1:{worker_port}/metrics", headers=SCRAPE_AUTH, timeout=2
                ).is_success
            ),
            "the worker's metrics",
            90,
            started,
        )
        _wait_until(
            lambda: httpx.get(f"{prom}/-/ready", timeout=2).status_code == 200,
            "Prometheus",
            60,
            started,
        )
        yield Stack(api, prom, obs_database, api_log, worker_log)
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


# -- the scenario ------------------------------------------------------------------------


@dataclass
class Done:
    started_at: float
    tenant_id: str
    succeeded_job_ids: list[str]
    balance_request_ids: list[str]
    peak_tenant_id: str
    jobs_succeeded: int  # every tenant's, the peak tenant's rushed swaps included


async def _admin_json(api: httpx.AsyncClient, method: str, path: str, headers, **kw) -> Any:
    response = await api.request(method, path, headers=headers, **kw)
    assert response.status_code in (200, 201), response.text
    return response.json()


@pytest.fixture(scope="module")
async def done(stack: Stack) -> AsyncIterator[Done]:
    started_at = time.time()
    async with httpx.AsyncClient(base_url=stack.api, timeout=120) as api:
        login = await api.post("/api/v1/auth/token", json=ROOT)
        assert login.status_code == 200, login.text
        root = {"Authorization": f"Bearer {login.json()['access_token']}"}
        tenant = await _admin_json(
            api,
            "POST",
            "/api/v1/admin/tenants",
            root,
            json={"name": "Observed", "slug": f"obs-{uuid.uuid4().hex[:8]}"},
        )
        tid = tenant["id"]
        await _admin_json(
            api,
            "POST",
            f"/api/v1/admin/tenants/{tid}/users/import",
            root,
            json={"users": [{"external_id": "payer"}, {"external_id": "broke"}]},
        )
        for body in (
            {"users": ["payer"], "amount": 10, "reason": "obs"},
            {"users": ["payer", "nobody"], "amount": 5, "reason": "obs"},  # one refused
        ):
            report = await _admin_json(
                api, "POST", f"/api/v1/admin/tenants/{tid}/recharges/bulk", root, json=body
            )
            assert report["status"] == "applied"
        keys = {}
        for user in ("payer", "broke"):
            key = await _admin_json(
                api,
                "POST",
                f"/api/v1/admin/tenants/{tid}/users/{user}/api-keys",
                root,
                json={"name": "obs", "rate_limit_per_second": 1000},
            )
            keys[user] = {"Authorization": f"Bearer {key['key']}"}

        succeeded = []
        for _ in range(2):
            swap = await api.post(
                "/api/v1/swap-face", json={"source": OBAMA, "target": BIDEN}, headers=keys["payer"]
            )
            assert swap.status_code == 200, swap.text
            assert swap.json()["status"] == "success" and swap.json()["tokens_charged"] == 1
            succeeded.append(swap.json()["job_id"])
        no_face = await api.post(
            "/api/v1/swap-face", json={"source": OBAMA, "target": FACELESS}, headers=keys["payer"]
        )
        assert no_face.status_code == 400 and no_face.json()["error"]["code"] == "NoFaceDetected"
        broke = await api.post(
            "/api/v1/swap-face", json={"source": OBAMA, "target": BIDEN}, headers=keys["broke"]
        )
        assert broke.status_code == 402, broke.text

        # A connection each, so that both API processes serve some of them.
        request_ids = [f"obs-balance-{i}" for i in range(BALANCE_READS)]
        for request_id in request_ids:
            answer = await api.get(
                "/api/v1/balance",
                headers={**keys["payer"], "X-Request-ID": request_id, "Connection": "close"},
            )
            assert answer.json() == {"balance": 13, "held": 0, "available": 13, "expiring": []}
        peak_tid = await _peak_tenant_on_a_plan(api, root, stack.database_url)
        verified = await _admin_json(api, "GET", "/api/v1/admin/ledger/verify", root)
        assert verified["ok"] is True, verified
    jobs = await _sql(stack.database_url, "SELECT count(*) FROM jobs WHERE status = 'succeeded'")
    yield Done(started_at, tid, succeeded, request_ids, peak_tid, jobs)


async def _sql(database_url: str, statement: str, *args: Any) -> Any:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(statement, *args)
    finally:
        await conn.close()


async def _poll(check: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def _peak_tenant_on_a_plan(api: httpx.AsyncClient, root: dict, database_url: str) -> str:
    """A tenant whose user is refilled by a plan, with a peak price book (x2 from one job
    queued); the user's swaps are sent without waiting (202) until one is held at the peak.
    Every one of them succeeds before this returns."""
    tenant = await _admin_json(
        api,
        "POST",
        "/api/v1/admin/tenants",
        root,
        json={"name": "Peak", "slug": f"obs-peak-{uuid.uuid4().hex[:8]}"},
    )
    tid = tenant["id"]
    base = f"/api/v1/admin/tenants/{tid}"
    await _admin_json(
        api,
        "PUT",
        f"{base}/pricing",
        root,
        json={"peak": {"queue_depth_at_least": 1, "multiplier": 2}, "reason": "obs"},
    )
    plan = {"daily_free_tokens": DAILY_TOKENS, "refill_time": "00:00", "timezone": "UTC"}
    await _admin_json(api, "PUT", f"{base}/plans/daily", root, json=plan)
    await _admin_json(
        api, "POST", f"{base}/users/import", root, json={"users": [{"external_id": "rusher"}]}
    )
    await _admin_json(api, "PATCH", f"{base}/users/rusher", root, json={"plan": "daily"})
    key = await _admin_json(
        api,
        "POST",
        f"{base}/users/rusher/api-keys",
        root,
        json={"name": "obs", "rate_limit_per_second": 1000},
    )
    rusher = {"Authorization": f"Bearer {key['key']}"}

    async def refilled() -> bool:  # a quote says what is available (balance reads are counted)
        quoted = await api.post(
            "/api/v1/quote", json={"source": OBAMA, "target": BIDEN}, headers=rusher
        )
        assert quoted.status_code == 200, quoted.text
        return quoted.json()["available"] == DAILY_TOKENS

    await _poll(refilled, "the plan's refill by the worker", 60)
    at_peak = "SELECT count(*) FROM holds WHERE tenant_id = $1 AND multiplier > 1"
    for _ in range(MAX_RUSHED):
        rushed = await api.post(
            "/api/v1/swap-face",
            json={"source": OBAMA, "target": BIDEN},
            headers={**rusher, "Prefer": "wait=0"},
        )
        assert rushed.status_code == 202, rushed.text
        if await _sql(database_url, at_peak, uuid.UUID(tid)):
            break
    else:
        pytest.fail(f"none of {MAX_RUSHED} swaps sent without waiting was priced at the peak")

    async def all_ended() -> bool:
        statuses = await _sql(
            database_url,
            "SELECT array_agg(DISTINCT status) FROM jobs WHERE tenant_id = $1",
            uuid.UUID(tid),
        )
        assert not set(statuses) - {"queued", "processing", "succeeded"}, statuses
        return set(statuses) == {"succeeded"}

    await _poll(all_ended, "the rushed swaps", 180)
    return tid


# -- Prometheus ------------------------------------------------------------------------------


async def _get(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url, **kw)


def query(stack: Stack, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


def value(stack: Stack, expr: str) -> float | None:
    result = query(stack, expr)
    assert len(result) <= 1, (expr, result)
    return float(result[0]["value"][1]) if result else None


async def scraped_after_the_scenario(stack: Stack, done: Done) -> None:
    """Wait until Prometheus holds the scenario's last counts, and a few scrapes after
    them (rates need two samples)."""
    deadline = time.monotonic() + 30
    checks = {
        'sum(swapmeter_jobs_finished_total{status="succeeded"})': done.jobs_succeeded,
        'sum(swapmeter_http_requests_total{route="/api/v1/balance"})': BALANCE_READS,
    }
    while (
        any(value(stack, e) != want for e, want in checks.items())
        or (
            (value(stack, "max(swapmeter_ledger_verify_last_run_timestamp_seconds)") or 0)
            < done.started_at
        )
        or not value(stack, 'sum(swapmeter_plan_refills_total{outcome="done"})')
    ):
        assert time.monotonic() < deadline, {e: value(stack, e) for e in checks}
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)


@pytest.fixture(scope="module")
async def settled(stack: Stack, done: Done) -> Done:
    await scraped_after_the_scenario(stack, done)
    return done


async def ledger_totals(database_url: str, tenant_id: str) -> dict[str, Any]:
    """Tokens moved by kind and jobs by status, of every tenant; ``tenant_id``'s captures
    and jobs; what was held at a peak multiplier."""
    tenant = uuid.UUID(tenant_id)
    conn = await asyncpg.connect(database_url)
    try:
        sums = {
            row["kind"]: int(row["total"])
            for row in await conn.fetch(
                "SELECT kind, sum(amount) AS total FROM ledger_entries GROUP BY kind"
            )
        }
        captured = await conn.fetchval(
            "SELECT sum(amount) FROM ledger_entries WHERE kind = 'capture' AND tenant_id = $1",
            tenant,
        )
        jobs = {
            (row["status"], row["error_code"]): row["n"]
            for row in await conn.fetch(
                "SELECT status, error_code, count(*) AS n FROM jobs WHERE tenant_id = $1"
                " GROUP BY 1, 2",
                tenant,
            )
        }
        all_jobs = await conn.fetchval("SELECT count(*) FROM jobs")
        at_peak = await conn.fetchrow(
            "SELECT count(*) AS holds, coalesce(sum(amount), 0) AS tokens FROM holds"
            " WHERE multiplier > 1"
        )
    finally:
        await conn.close()
    return {
        "tokens": sums,
        "captured": int(captured),
        "jobs": jobs,
        "all_jobs": all_jobs,
        "at_peak": dict(at_peak),
    }


async def test_counters_equal_what_was_done(stack: Stack, settled: Done) -> None:
    truth = await ledger_totals(stack.database_url, settled.tenant_id)
    assert truth["captured"] == 2 and truth["tokens"]["recharge"] == 15
    for kind in ("capture", "recharge", "hold", "release", "grant"):
        counted = value(stack, f'sum(swapmeter_tokens_moved_total{{kind="{kind}"}})')
        assert counted == truth["tokens"][kind], kind
    by_tenant = value(
        stack, f'sum(swapmeter_tokens_moved_total{{kind="capture",tenant="{settled.tenant_id}"}})'
    )
    assert by_tenant == truth["captured"]
    assert truth["jobs"] == {("succeeded", None): 2, ("failed", "NoFaceDetected"): 1}
    succeeded = value(stack, 'sum(swapmeter_jobs_finished_total{status="succeeded"})')
    assert succeeded == settled.jobs_succeeded == truth["all_jobs"] - 1
    failed = 'sum(swapmeter_jobs_finished_total{status="failed",code="NoFaceDetected"})'
    assert value(stack, failed) == 1
    assert value(stack, 'sum(swapmeter_bulk_recharge_batches_total{status="applied"})') == 2
    refused = 'sum(swapmeter_bulk_recharge_failed_entries_total{code="UserNotFound"})'
    assert value(stack, refused) == 1
    assert value(stack, 'sum(swapmeter_http_errors_total{code="InsufficientBalance"})') == 1
    assert value(stack, 'sum(swapmeter_job_run_seconds_count{kind="image"})') == truth["all_jobs"]
    assert value(stack, "max(swapmeter_workers_live)") == 1
    assert value(stack, "max(swapmeter_holds_open_stale)") == 0

    # The Token policies: the plan's refill, the holds at the peak price.
    assert truth["tokens"]["grant"] == DAILY_TOKENS
    assert value(stack, "sum(swapmeter_plan_refill_tokens_total)") == DAILY_TOKENS
    assert value(stack, "sum(swapmeter_plan_refill_users_total)") == 1
    assert value(stack, 'sum(swapmeter_plan_refills_total{outcome="failed"})') == 0
    peak = f'{{tenant="{settled.peak_tenant_id}"}}'
    assert truth["at_peak"]["holds"] >= 1
    assert value(stack, f"sum(swapmeter_holds_at_peak_total{peak})") == truth["at_peak"]["holds"]
    held = value(stack, f"sum(swapmeter_tokens_held_at_peak_total{peak})")
    assert held == truth["at_peak"]["tokens"]
    assert value(stack, f"max(swapmeter_price_multiplier{peak})") in (1, 2)


async def test_every_api_process_serves_the_sum_of_all(stack: Stack, settled: Done) -> None:
    """Two uvicorn workers, and a scrape is answered by one of them: each answer counts
    every balance read, whichever process served it."""
    line = re.compile(
        r'^swapmeter_http_requests_total\{method="GET",route="/api/v1/balance",status="200"\} '
        r"(\S+)$",
        re.M,
    )
    assert (await _get(f"{stack.api}/metrics")).status_code == 401  # no token, no metrics
    for _ in range(6):
        scraped = (
            await _get(f"{stack.api}/metrics", headers={"Connection": "close", **SCRAPE_AUTH})
        ).text
        assert [float(v) for v in line.findall(scraped)] == [BALANCE_READS]
        # Cluster-wide gauges appear once, not once per process.
        assert len(re.findall(r"^swapmeter_workers_live ", scraped, re.M)) == 1


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expression) of every panel."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


def alert_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


async def test_every_metric_the_dashboards_and_alerts_name_is_exported(
    stack: Stack, settled: Done
) -> None:
    answer = (await _get(f"{stack.prometheus}/api/v1/label/__name__/values")).json()
    exported = set(answer["data"])
    gpus = value(stack, "sum(swapmeter_gpu_devices)")
    assert gpus is not None  # the worker exports it, GPU or not
    expressions = [e for *_, e in dashboard_targets()] + [e for _, e in alert_expressions()]
    named = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert len(named) > 25
    missing = named - exported
    if gpus == 0:  # the GPU gauges exist only where NVML sees a GPU
        assert missing <= set(gpu_metrics.NAMES), missing
        missing -= set(gpu_metrics.NAMES)
    assert not missing, f"named by a dashboard or alert but not exported: {sorted(missing)}"

    # And docs/observability.md describes every metric SwapMeter exports.
    documented = set(METRIC_NAME.findall((REPO / "docs" / "observability.md").read_text()))
    ours = {re.sub(r"_(bucket|count|sum|created)$", "", n) for n in exported}
    undocumented = {
        n for n in ours if n.startswith("swapmeter_") and not {n, f"{n}_total"} & documented
    }
    assert not undocumented, f"exported but not in docs/observability.md: {sorted(undocumented)}"


async def test_every_dashboard_panel_returns_data(stack: Stack, settled: Done) -> None:
    empty = []
    for board, title, expr in dashboard_targets():
        for variable, filled in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, filled)
        if not query(stack, expr) and title not in NO_DATA_EXPECTED:
            empty.append(f"{board}: {title}: {expr}")
    assert not empty, "\n".join(empty)


async def test_prometheus_evaluates_every_rule_and_nothing_fires(
    stack: Stack, settled: Done
) -> None:
    groups = (await _get(f"{stack.prometheus}/api/v1/rules")).json()["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == {name for name, _ in alert_expressions()}
    for name, rule in rules.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))
        assert rule["evaluationTime"] >= 0 and rule["lastEvaluation"][:4] != "0001", name
        # The latency ones depend on this machine's load; everything else is healthy here.
        if "Latency" not in name:
            assert rule["state"] == "inactive", (name, rule["alerts"])
    age = value(stack, "time() - max(swapmeter_ledger_verify_last_run_timestamp_seconds)")
    assert age is not None and age < time.time() - settled.started_at + 5


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def test_json_logs_name_the_request_the_tenant_and_the_job(
    stack: Stack, settled: Done
) -> None:
    api_lines = json_lines(stack.api_log)
    assert api_lines and all({"time", "level", "logger", "message"} <= set(e) for e in api_lines)
    reads = [e for e in api_lines if e.get("request_id") in settled.balance_request_ids]
    assert {e["request_id"] for e in reads} == set(settled.balance_request_ids)
    assert all(e["tenant_id"] == settled.tenant_id for e in reads)
    assert all("/api/v1/balance" in e["message"] for e in reads)

    worker_lines = json_lines(stack.worker_log)
    ended = {e["job_id"]: e for e in worker_lines if "succeeded" in e["message"] and "job_id" in e}
    assert set(settled.succeeded_job_ids) <= set(ended)
    assert all(ended[job]["tenant_id"] == settled.tenant_id for job in settled.succeeded_job_ids)
    assert {e["tenant_id"] for e in ended.values()} == {settled.tenant_id, settled.peak_tenant_id}
