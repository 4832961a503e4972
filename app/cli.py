"""The ``swapmeter`` command: dev, api, migrate, worker, models, bench, admin.

``swapmeter dev`` is the one-machine mode: with no SWAPMETER_DATABASE_URL / _REDIS_URL it
starts real PostgreSQL and Redis from PyPI wheels under SWAPMETER_DATA_DIR, migrates,
seeds a demo tenant and serves on localhost. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import runpy
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.settings import REPO_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from admin.seed import DemoInfo

log = logging.getLogger("swapmeter")


def main(argv: list[str] | None = None) -> int:
    from app.core import logs

    logs.configure()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["admin"]:  # the operator CLI has its own parser (Typer): admin/cli
        from admin.cli import main as admin_main

        return admin_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from pydantic import ValidationError

    from app.startup import StartupError

    try:
        return int(args.func(args) or 0)
    except StartupError as exc:
        # The database is not there or not migrated: one line, as for the settings.
        print(f"swapmeter {args.command}: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise
        # The settings: one line each, not a traceback.
        print("swapmeter: the settings cannot be used:", file=sys.stderr)
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            print(
                f"  {'SWAPMETER_' + where.upper() + ': ' if where else ''}{message}",
                file=sys.stderr,
            )
        return 2


def build_parser() -> argparse.ArgumentParser:
    from inference.cli import add_models_commands

    parser = argparse.ArgumentParser(
        prog="swapmeter", description="SwapMeter, the metered face-swap API, and its tools."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    dev = sub.add_parser("dev", help="run everything on this machine (embedded servers)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.set_defaults(func=cmd_dev)

    api = sub.add_parser("api", help="serve the HTTP API (production: no embedded servers)")
    api.add_argument("--host", default="0.0.0.0")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes (their metrics are added up: PROMETHEUS_MULTIPROC_DIR)",
    )
    api.set_defaults(func=cmd_api)

    migrate = sub.add_parser("migrate", help="bring the database schema to head (idempotent)")
    migrate.set_defaults(func=cmd_migrate)

    worker = sub.add_parser("worker", help="run swap jobs (any number of processes, any host)")
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="jobs at once in this process (default SWAPMETER_JOBS_WORKER_CONCURRENCY)",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics here (default SWAPMETER_JOBS_WORKER_METRICS_PORT; 0: off)",
    )
    worker.add_argument(
        "--metrics-host",
        default=None,
        help="address /metrics listens on (default SWAPMETER_JOBS_WORKER_METRICS_HOST, "
        "127.0.0.1; 0.0.0.0: all interfaces)",
    )
    worker.set_defaults(func=cmd_worker)

    add_models_commands(sub, lambda: get_settings().engine_config())

    # Listed for --help only: main() hands `swapmeter admin ...` to admin.cli.
    sub.add_parser("admin", help="operate a running service over HTTP (login, recharge, ...)")

    bench = sub.add_parser("bench", help="run a benchmark script from bench/")
    scripts = (REPO_ROOT / "bench").glob("*.py")
    bench.add_argument("name", choices=sorted(p.stem for p in scripts if p.stem[0] != "_"))
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    return parser


def _warn(args: argparse.Namespace, warning: str | None) -> None:
    if warning:
        print(f"swapmeter {args.command}: warning: {warning}", file=sys.stderr)


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.migrate import upgrade_to_head
    from app.startup import check_database

    settings = get_settings()
    check_database(settings.database_url, for_migrate=True)
    upgrade_to_head(settings.database_url)
    print("database schema is at head")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from app.jobs.worker import run_worker_process
    from app.startup import check_database, check_models

    # One process serving its own /metrics: the API's multiprocess folder is not its.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    settings = get_settings()
    # Before "started": once running, the worker retries database errors instead.
    _warn(args, check_database(settings.database_url))
    check_models(settings)
    # uvloop, as uvicorn uses for the API: the plain loop was ~15% of a worker's CPU.
    import uvloop

    uvloop.run(
        run_worker_process(
            settings,
            concurrency=args.concurrency,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        )
    )
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from app.core import logs
    from app.startup import check_database

    _warn(args, check_database(get_settings().database_url))
    # Before uvicorn starts the workers (and they import the metrics): each then writes
    # its samples to the shared folder, and a scrape of any of them serves the sum.
    metrics_dir = _prepare_metrics_dir() if args.workers > 1 else None
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            proxy_headers=True,
            log_level=os.environ.get("SWAPMETER_LOG_LEVEL", "info").lower(),
            log_config=logs.uvicorn_log_config() or uvicorn.config.LOGGING_CONFIG,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _prepare_metrics_dir() -> Path | None:
    """The folder the API processes share their metrics in (prometheus-client's
    multiprocess mode), emptied of a previous run's samples, which would otherwise carry
    on into the new counters: ``PROMETHEUS_MULTIPROC_DIR`` when the operator set one (one
    folder per ``swapmeter api``), else a new temporary folder. Returns the folder to
    remove at exit (the temporary one), else None."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not given:
        folder = Path(tempfile.mkdtemp(prefix="swapmeter-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        return folder
    Path(given).mkdir(parents=True, exist_ok=True)
    for stale in Path(given).glob("*.db"):
        stale.unlink(missing_ok=True)
    return None


def cmd_bench(args: argparse.Namespace) -> int:
    sys.argv = [args.name, *args.rest]
    runpy.run_path(str(REPO_ROOT / "bench" / f"{args.name}.py"), run_name="__main__")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    import uvicorn

    from app.core import logs
    from app.embedded import EmbeddedPostgres, EmbeddedRedis, ensure_database
    from app.migrate import upgrade_to_head
    from app.startup import check_database

    # uvicorn re-raises SIGTERM after its own shutdown; turn it into an exit that runs the
    # `finally` below, so the embedded servers stop on SIGTERM (and SIGHUP, a closed
    # terminal) as they do on Ctrl-C.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _terminate_on_hangup)
    settings = get_settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # One `swapmeter dev` per data dir: a second one would take over the first one's
    # servers and stop them when it ends. Held until this process exits.
    lock = open(data_dir / "dev.lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"swapmeter dev is already running with data dir {data_dir}") from None
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    try:
        if not settings.database_url:
            pg = EmbeddedPostgres(data_dir)
            pg.start(adopt=True)  # also one a killed `swapmeter dev` left running
            started.append(pg)
            os.environ["SWAPMETER_DATABASE_URL"] = ensure_database(pg.url(), "swapmeter")
        if not settings.redis_url:
            rd = EmbeddedRedis(data_dir)
            rd.start(adopt=True)
            started.append(rd)
            os.environ["SWAPMETER_REDIS_URL"] = rd.url
        new_password = _dev_admin_defaults(data_dir)
        # One process does it all: the API runs the swap jobs too (no `swapmeter worker`).
        os.environ.setdefault("SWAPMETER_JOBS_INPROCESS_WORKER", "true")
        get_settings.cache_clear()
        settings = get_settings()

        # A SWAPMETER_DATABASE_URL of the operator's may be down, or newer than this code.
        check_database(settings.database_url, for_migrate=True)
        upgrade_to_head(settings.database_url)
        demo = asyncio.run(_seed_demo(settings))
        _print_banner(settings, args, demo, new_password=new_password)
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            log_level="info",
            log_config=logs.uvicorn_log_config() or uvicorn.config.LOGGING_CONFIG,
        )
    except KeyboardInterrupt:
        pass
    finally:
        for server in reversed(started):
            server.stop()
    return 0


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _terminate_on_hangup(signum: int, frame: object) -> None:
    """A closed terminal: stop as on SIGTERM (uvicorn shuts the app down first)."""
    os.kill(os.getpid(), signal.SIGTERM)


DEV_ADMIN_PASSWORD_FILE = "dev-admin-password"


def _dev_admin_defaults(data_dir: Path) -> bool:
    """A first platform admin for the dev instance; the password is kept in the data dir.
    True when the password was made just now (and is the one the admin gets): the banner
    then shows it, this once."""
    os.environ.setdefault("SWAPMETER_BOOTSTRAP_ADMIN_EMAIL", "admin@swapmeter.local")
    password_file = data_dir / DEV_ADMIN_PASSWORD_FILE
    created = not password_file.exists()
    if created:
        # Readable by its owner only, from the first byte written.
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(12))
    given = os.environ.get("SWAPMETER_BOOTSTRAP_ADMIN_PASSWORD")
    os.environ.setdefault("SWAPMETER_BOOTSTRAP_ADMIN_PASSWORD", password_file.read_text().strip())
    return created and not given


async def _seed_demo(settings: Settings) -> DemoInfo | None:
    """Create what is missing of the demo tenant, user, Tokens and API key."""
    from admin.seed import seed_demo
    from app.core.db import Database

    db = Database(settings.database_url, pool_size=2, max_overflow=0)
    try:
        return await seed_demo(db, settings)
    finally:
        await db.dispose()


def _admin_password_line(settings: Settings, new_password: bool) -> str:
    """The password itself once, when it was just made; after that, where it is kept (a
    terminal's scrollback and shared screens are not a place for it on every start)."""
    password_file = settings.data_dir.resolve() / DEV_ADMIN_PASSWORD_FILE
    kept = password_file.is_file() and (
        password_file.read_text().strip() == settings.bootstrap_admin_password
    )
    if new_password:
        return f"{settings.bootstrap_admin_password} (shown once; kept in {password_file})"
    if kept:
        return f"password in {password_file}"
    return "the password of SWAPMETER_BOOTSTRAP_ADMIN_PASSWORD"


def _print_banner(
    settings: Settings,
    args: argparse.Namespace,
    demo: DemoInfo | None,
    *,
    new_password: bool = False,
) -> None:
    base = f"http://{args.host}:{args.port}"
    lines = [
        "",
        "SwapMeter is starting (Ctrl-C stops it and the servers it started)",
        f"  Dashboard:       {base}/dashboard (sign in as the platform admin below)",
        f"  API docs:        {base}/docs",
        f"  Database:        {settings.database_url}",
        f"  Redis:           {settings.redis_url}",
        f"  Data dir:        {settings.data_dir.resolve()}",
        "  Platform admin:  "
        f"{settings.bootstrap_admin_email} / {_admin_password_line(settings, new_password)}",
    ]
    if demo is not None:
        lines += [
            f"  Demo tenant:     {demo.tenant_slug} ({demo.tenant_id})",
            f"  Demo user:       {demo.user_external_id}, {demo.balance} Tokens",
            f"  Demo API key:    {demo.api_key or '(issued on an earlier run; not shown again)'}",
            f"                   {demo.message}",
            "  Try it:          curl -H 'Authorization: Bearer <key>' " + f"{base}/api/v1/balance",
        ]
    print("\n".join(lines) + "\n", flush=True)


if __name__ == "__main__":
    sys.exit(main())
