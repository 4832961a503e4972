"""Soak: mixed traffic against a real API and worker for a long time, and whether the
resources they hold stay flat.

Run as ``.venv/bin/python bench/soak.py`` (20 minutes; ``--minutes 3`` for a quick look).
On a scratch database (created, migrated and dropped again) it runs the API under uvicorn
(one process, as ``swapmeter api``) and one ``swapmeter worker``, and ``--clients``
clients, each looping over a mix of:

- image swaps (obama.jpg onto biden.jpg), answered synchronously;
- video swaps of a 1 s, 320x180 clip (made with the ffmpeg binary of the imageio-ffmpeg
  wheel), waited for with ``Prefer: wait=30``;
- videos canceled as soon as they are queued (the cancel races the worker: canceled
  before it starts, stopped part-way, or already done, 409 JobFinished);
- bulk recharges of the users, through the admin API with an Idempotency-Key.

Every ``--interval`` seconds it prints each process's RSS and open file descriptors, the
worker's child processes (ffmpeg), the jobs' temporary files (the data dir's ``tmp`` and
the processes' own TMPDIR), the results kept (they grow by design: kept 24 h), the open
holds and the answers so far. Once the traffic stops it waits for the queue to drain and
checks that no hold is left open and no temporary file is left behind. Last, each series'
mean over the last third of the run against its first third (after ``--warmup`` seconds):
flat within the tolerances, or not (then the exit status is 1).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import orjson

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import _harness as harness  # noqa: E402

FACES = harness.REPO.parent / "shared" / "media" / "faces"
USERS = 4
START_TOKENS = 1_000_000
# Weights of the client actions.
MIX = {"image": 6, "video": 2, "cancel": 1, "recharge": 1}
# A series is flat when its last third's mean is within these of its first third's.
RSS_TOLERANCE = 0.10  # relative
COUNT_SLACK = {"api_fds": 8, "worker_fds": 8, "worker_children": 2, "tmp_files": 4}


def make_clip(out: Path) -> bytes:
    """1 s at 10 fps, 320x180, over obama-720p.jpg (a face in view)."""
    import imageio_ffmpeg

    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y",
            "-loop", "1", "-framerate", "10", "-t", "1", "-i", str(FACES / "obama-720p.jpg"),
            "-vf", "crop=640:360:344:0,scale=320:180,format=yuv420p",
            "-c:v", "libx264", "-preset", "ultrafast", str(out),
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return out.read_bytes()


# -- what is measured --------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def children(pid: int) -> int:
    """Live processes whose parent is ``pid`` (the worker's ffmpeg runs)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        count += 1
            except (OSError, ValueError, IndexError):
                continue
    return count


def files_under(*roots: Path) -> int:
    return sum(len(files) for root in roots for _, _, files in os.walk(root))


@dataclass
class Sample:
    t: float
    values: dict[str, float]


@dataclass
class Soak:
    base: str
    admin: dict[str, str]
    tenant_id: str
    users: list[str]
    keys: list[str]
    image_body: bytes
    video_body: bytes
    answers: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    def note(self, action: str, status: int, expected: tuple[int, ...], text: str = "") -> None:
        self.answers[f"{action} {status}"] += 1
        if status not in expected and len(self.unexpected) < 20:
            self.unexpected.append(f"{action} {status} {text[:200]}")


# -- the traffic ---------------------------------------------------------------------------


async def one_action(soak: Soak, client: httpx.AsyncClient, rng: random.Random) -> None:
    action = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    key = soak.keys[rng.randrange(len(soak.keys))]
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if action == "image":
        r = await client.post("/api/v1/swap-face", content=soak.image_body, headers=auth)
        soak.note(action, r.status_code, (200,), r.text)
    elif action == "video":
        r = await client.post(
            "/api/v1/swap-face", content=soak.video_body, headers={**auth, "Prefer": "wait=30"}
        )
        soak.note(action, r.status_code, (200, 202), r.text)
    elif action == "cancel":
        r = await client.post("/api/v1/swap-face", content=soak.video_body, headers=auth)
        soak.note("cancel-submit", r.status_code, (202,), r.text)
        if r.status_code == 202:
            job_id = r.json()["job_id"]
            c = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth)
            soak.note(action, c.status_code, (200, 409), c.text)
    else:
        r = await client.post(
            f"/api/v1/admin/tenants/{soak.tenant_id}/recharges/bulk",
            json={"users": [rng.choice(soak.users)], "amount": 50, "reason": "soak"},
            headers={**soak.admin, "Idempotency-Key": f"soak-{uuid.uuid4()}"},
        )
        soak.note(action, r.status_code, (200,), r.text)


async def client_loop(soak: Soak, index: int, until: float) -> None:
    rng = random.Random(index)
    async with httpx.AsyncClient(base_url=soak.base, timeout=120) as client:
        while time.monotonic() < until:
            try:
                await one_action(soak, client, rng)
            except httpx.TransportError as exc:
                soak.note("transport", 0, (), type(exc).__name__)
                await asyncio.sleep(1)


async def setup(base: str, image_body: bytes, video_body: bytes) -> Soak:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        admin = await harness.admin_headers(client)
        tenant_id = await harness.create_tenant(client, admin, "soak")
        admin_base = f"/api/v1/admin/tenants/{tenant_id}"
        users = [f"soak-{i}" for i in range(USERS)]
        (
            await client.post(
                f"{admin_base}/users/import",
                json={"users": [{"external_id": u} for u in users]},
                headers=admin,
            )
        ).raise_for_status()
        (
            await client.post(
                f"{admin_base}/recharges/bulk",
                json={"users": users, "amount": START_TOKENS, "reason": "soak"},
                headers=admin,
            )
        ).raise_for_status()
        keys = []
        for user in users:
            response = await client.post(
                f"{admin_base}/users/{user}/api-keys",
                json={"name": "soak", "rate_limit_per_second": 100_000},
                headers=admin,
            )
            response.raise_for_status()
            keys.append(response.json()["key"])
    return Soak(base, admin, tenant_id, users, keys, image_body, video_body)


# -- the run -------------------------------------------------------------------------------


class Probe:
    def __init__(self, pids: dict[str, int], database_url: str, temp_roots: list[Path]):
        self.pids = pids
        self.database_url = database_url
        self.temp_roots = temp_roots
        self.results: Path | None = None

    async def sample(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for name, pid in self.pids.items():
            values[f"{name}_rss_mb"] = rss_mb(pid)
            values[f"{name}_fds"] = open_fds(pid)
        values["worker_children"] = children(self.pids["worker"])
        values["tmp_files"] = files_under(*self.temp_roots)
        values["results"] = files_under(self.results) if self.results else 0
        connection = await asyncpg.connect(self.database_url)
        try:
            row = await connection.fetchrow(
                "SELECT count(*) AS holds, coalesce(sum(amount), 0) AS tokens "
                "FROM holds WHERE status = 'held'"
            )
            queued = await connection.fetchval(
                "SELECT count(*) FROM jobs WHERE status IN ('queued', 'processing')"
            )
        finally:
            await connection.close()
        values["open_holds"] = row["holds"]
        values["held_tokens"] = row["tokens"]
        values["unfinished_jobs"] = queued
        return values


COLUMNS = [
    ("api_rss_mb", "api MB", "{:8.1f}"),
    ("api_fds", "api fds", "{:8.0f}"),
    ("worker_rss_mb", "wrk MB", "{:8.1f}"),
    ("worker_fds", "wrk fds", "{:8.0f}"),
    ("worker_children", "wrk kids", "{:8.0f}"),
    ("tmp_files", "tmp files", "{:9.0f}"),
    ("results", "results", "{:8.0f}"),
    ("open_holds", "holds", "{:6.0f}"),
]


def print_row(sample: Sample, soak: Soak) -> None:
    cells = " ".join(fmt.format(sample.values[key]) for key, _, fmt in COLUMNS)
    done = sum(n for k, n in soak.answers.items() if not k.startswith("cancel-submit"))
    print(f"{sample.t:7.0f} {cells}  {done:7d}", flush=True)


def verdict(samples: list[Sample], warmup_s: float, slack_holds: int) -> bool | None:
    """Each series: its last third's mean against its first third's, after the warm-up
    (None: too few samples to judge)."""
    kept = [s for s in samples if s.t >= warmup_s]
    if len(kept) < 6:
        print(f"\ntoo few samples after the {warmup_s:.0f} s warm-up to judge ({len(kept)})")
        return None
    third = len(kept) // 3
    first, last = kept[:third], kept[-third:]
    print(f"\nfirst third vs last third (after {warmup_s:.0f} s warm-up, {third} samples each):")
    flat = True
    for key, label, _ in COLUMNS:
        if key == "results":
            continue  # kept 24 h by design
        a = sum(s.values[key] for s in first) / third
        b = sum(s.values[key] for s in last) / third
        if key.endswith("_rss_mb"):
            ok = b <= a * (1 + RSS_TOLERANCE)
            rule = f"<= +{RSS_TOLERANCE:.0%}"
        elif key == "open_holds":
            ok = b <= a + slack_holds
            rule = f"<= +{slack_holds} (in flight)"
        else:
            slack = COUNT_SLACK[key]
            ok = b <= a + slack
            rule = f"<= +{slack}"
        flat &= ok
        print(f"  {label:10s} {a:10.1f} -> {b:10.1f}  {rule:22s} {'flat' if ok else 'GREW'}")
    return flat


def swap_bodies(tmp: Path) -> tuple[bytes, bytes]:
    """The image swap's JSON body and the 1 s video's."""
    source = base64.b64encode((FACES / "obama.jpg").read_bytes()).decode()
    image = base64.b64encode((FACES / "biden.jpg").read_bytes()).decode()
    clip = base64.b64encode(make_clip(tmp / "clip.mp4")).decode()
    return (
        orjson.dumps({"source": source, "target": image}),
        orjson.dumps({"source": source, "target": clip}),
    )


async def sample_until(
    probe: Probe, soak: Soak, processes: list, args: argparse.Namespace
) -> list[Sample]:
    """Run the clients for ``--minutes``, sampling every ``--interval`` seconds."""
    print(
        f"soak: {args.minutes:g} min, {args.clients} clients, worker concurrency "
        f"{args.worker_concurrency}, swapper {args.swapper}, mix {MIX}; "
        f"load average {harness.load_average()}"
    )
    print(
        "   t(s) " + " ".join(f"{label:>{len(fmt.format(0))}}" for _, label, fmt in COLUMNS)
        + "  answers"
    )  # fmt: skip
    start = time.monotonic()
    until = start + args.minutes * 60
    clients = [asyncio.create_task(client_loop(soak, i, until)) for i in range(args.clients)]
    samples: list[Sample] = []
    while time.monotonic() < until:
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"{process.args[:4]} exited with {process.returncode}")
        sample = Sample(time.monotonic() - start, await probe.sample())
        samples.append(sample)
        print_row(sample, soak)
        await asyncio.sleep(min(args.interval, max(0.0, until - time.monotonic())))
    await asyncio.gather(*clients)
    return samples


async def drained(probe: Probe, soak: Soak) -> bool:
    """Once the traffic stopped: no job left (within 2 minutes), no hold open."""
    deadline = time.monotonic() + 120
    after = await probe.sample()
    while after["unfinished_jobs"] and time.monotonic() < deadline:
        await asyncio.sleep(1)
        after = await probe.sample()
    print(f"\nanswers: {dict(sorted(soak.answers.items()))}")
    for line in soak.unexpected:
        print(f"  unexpected: {line}")
    print(
        f"after the traffic, drained: unfinished jobs {after['unfinished_jobs']:.0f}, "
        f"open holds {after['open_holds']:.0f} ({after['held_tokens']:.0f} Tokens), "
        f"temporary files {after['tmp_files']:.0f}, results kept {after['results']:.0f}; "
        f"load average {harness.load_average()}"
    )
    return after["open_holds"] == 0 and after["unfinished_jobs"] == 0


async def run(args: argparse.Namespace, database_url: str, tmp: Path) -> bool:
    proc_tmp = tmp / "proc-tmp"
    proc_tmp.mkdir(parents=True)
    data_dir = tmp / "data"
    env = harness.service_env(
        database_url,
        jobs_swapper=args.swapper,
        data_dir=str(data_dir),
        jobs_image_wait_seconds="60",
        jobs_housekeeping_seconds="5",
        max_concurrent_jobs_per_tenant=str(max(8, args.worker_concurrency)),
    )
    env["TMPDIR"] = str(proc_tmp)  # whatever they put in the system's temp folder, counted
    port = harness.free_port()
    server = harness.start_server(env, port)
    worker = harness.start_worker(env, concurrency=args.worker_concurrency)
    try:
        image_body, video_body = swap_bodies(tmp)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as client:
            await harness.wait_ready(client, server)
        soak = await setup(base, image_body, video_body)
        probe = Probe(
            {"api": server.pid, "worker": worker.pid}, database_url, [data_dir / "tmp", proc_tmp]
        )
        probe.results = data_dir / "results"
        samples = await sample_until(probe, soak, [server, worker], args)
        empty = await drained(probe, soak)
        warmup = min(args.warmup, args.minutes * 60 / 6)
        flat = verdict(samples, warmup, slack_holds=args.clients + args.worker_concurrency)
        print(
            f"\nverdict: {({True: 'FLAT', False: 'NOT FLAT'}).get(flat, 'TOO SHORT TO JUDGE')}; "
            f"{'drained' if empty else 'NOT DRAINED'}; "
            f"{'no unexpected answer' if not soak.unexpected else 'UNEXPECTED ANSWERS'}"
        )
        return bool(flat) and empty and not soak.unexpected
    finally:
        harness.stop(worker)
        harness.stop(server)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument(
        "--warmup", type=float, default=60.0, help="seconds left out of the verdict"
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--swapper", choices=["engine", "noop"], default="engine")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swapmeter-soak-") as tmp:
        async with harness.scratch_database(f"swapmeter_soak_{os.getpid()}") as url:
            ok = await run(args, url, Path(tmp))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
