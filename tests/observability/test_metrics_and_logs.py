"""The metrics and logs that need no Prometheus to check: the ledger verification's gauges
and its turn-taking, holds left open, the GPU collector, JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import uuid
from types import SimpleNamespace

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from sqlalchemy import text

from app import ledger_verify, logs
from app.gpu_metrics import GpuCollector
from app.jobs import queue as jobs_queue
from billing import holds
from billing import service as billing
from tests.billing.conftest import add_users, make_tenant


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_workers_take_turns_verifying_the_ledger_and_its_result_shows_as_gauges(
    db, redis
) -> None:
    keys = {"turn_key": f"test:turn:{uuid.uuid4().hex}", "last_key": f"test:last:{uuid.uuid4()}"}
    world = await make_tenant(db)
    await add_users(db, world, ["u"])
    async with db.session() as session:
        await billing.recharge(session, world.tenant_id, world.users["u"], 5)
    # A balance edited behind the ledger's back: the user's balance, and its tenant's zero sum.
    async with db.session() as session:
        await session.execute(
            text("UPDATE accounts SET balance = balance + 7 WHERE user_id = :u"),
            {"u": world.users["u"]},
        )
    try:
        assert await ledger_verify.verify_if_due(db, redis, 60, "worker-a", **keys)
        assert not await ledger_verify.verify_if_due(db, redis, 60, "worker-b", **keys)
        assert sample("swapmeter_ledger_verify_ok") == 0
        assert sample("swapmeter_ledger_verify_mismatches", check="zero_sum") >= 1
        assert sample("swapmeter_ledger_verify_mismatches", check="balance") >= 1
        ran_at = sample("swapmeter_ledger_verify_last_run_timestamp_seconds")
    finally:
        async with db.session() as session:
            await session.execute(
                text("UPDATE accounts SET balance = balance - 7 WHERE user_id = :u"),
                {"u": world.users["u"]},
            )
    # Another process shows what the one that ran it found (kept in Redis).
    last = json.loads(await redis.get(keys["last_key"]))
    assert last["at"] == ran_at and last["ok"] is False
    assert last["mismatches"]["zero_sum"] >= 1
    ledger_verify.metrics.VERIFY_OK.set(1)  # as a process that has not loaded it yet
    await ledger_verify.refresh_gauges(redis, last_key=keys["last_key"])
    assert sample("swapmeter_ledger_verify_ok") == 0
    assert not await ledger_verify.verify_if_due(db, redis, 0, "worker-a", **keys)  # 0: off
    await redis.delete(*keys.values())


async def test_a_hold_whose_job_is_gone_counts_as_left_open(db) -> None:
    world = await make_tenant(db)
    await add_users(db, world, ["u"])

    async def stale_holds() -> float:
        async with db.session() as session:
            await jobs_queue.refresh_cluster_gauges(session, 0.5, lease_s=30)
        value = sample("swapmeter_holds_open_stale")
        assert value is not None
        return value

    reference = f"job-{uuid.uuid4()}"
    async with db.session() as session:
        await billing.recharge(session, world.tenant_id, world.users["u"], 5)
        await holds.hold(session, world.tenant_id, world.users["u"], reference, 2)
    before = await stale_holds()  # a young hold: its job may still be being created
    async with db.session() as session:
        await session.execute(
            text(
                "UPDATE holds SET created_at = now() - interval '1 minute' "
                "WHERE tenant_id = :t AND status = 'held'"
            ),
            {"t": world.tenant_id},
        )
    assert await stale_holds() == before + 1
    async with db.session() as session:  # leave no open hold behind for other tests
        await session.execute(
            text("UPDATE holds SET created_at = now() WHERE tenant_id = :t AND status = 'held'"),
            {"t": world.tenant_id},
        )


class FakeNvml:
    """NVML as nvidia-ml-py presents it, for one 80 GB GPU 37% busy."""

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802 - NVML's names
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:  # noqa: N802
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(gpu=37, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(used=3 * 2**30, total=80 * 2**30, free=77 * 2**30)


def test_gpu_gauges_come_from_nvml_and_say_zero_gpus_without_it() -> None:
    with_gpu = CollectorRegistry()
    with_gpu.register(GpuCollector(FakeNvml()))
    assert with_gpu.get_sample_value("swapmeter_gpu_devices") == 1
    assert with_gpu.get_sample_value("swapmeter_gpu_utilization_ratio", {"gpu": "0"}) == 0.37
    assert with_gpu.get_sample_value("swapmeter_gpu_memory_used_bytes", {"gpu": "0"}) == 3 * 2**30
    assert with_gpu.get_sample_value("swapmeter_gpu_memory_total_bytes", {"gpu": "0"}) == 80 * 2**30

    without = CollectorRegistry()
    without.register(GpuCollector(None))
    text_format = generate_latest(without).decode()
    assert "swapmeter_gpu_devices 0.0" in text_format
    assert "swapmeter_gpu_utilization_ratio{" not in text_format


def test_json_log_lines_carry_the_ids_of_the_work_being_done() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("swapmeter.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    tokens = [logs.request_id.set("req-1"), logs.tenant_id.set("tenant-1"), logs.job_id.set("j")]
    try:
        logger.warning("swapped %d faces", 2)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        for var, token in zip((logs.request_id, logs.tenant_id, logs.job_id), tokens, strict=True):
            var.reset(token)
    logger.warning("outside any request")
    logger.removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "swapped 2 faces" and first["level"] == "WARNING"
    assert (first["request_id"], first["tenant_id"], first["job_id"]) == ("req-1", "tenant-1", "j")
    assert first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["exception"]
    assert not {"request_id", "tenant_id", "job_id"} & set(third)
