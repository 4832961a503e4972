"""Start-up checks as an operator meets them: `swapmeter api`, `worker` and `migrate`
against a database that is down, missing, empty, behind or ahead of the code."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import make_url

from app.migrate import alembic_config, migration_scripts
from tests.conftest import REPO, server_sql

PASSWORD = "hunter2-not-for-logs"
HEAD = migration_scripts().get_current_head()


def swapmeter(*args: str, database_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``swapmeter ARGS``; one that does not stop by itself fails the test."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO,
        env=swapmeter_env(database_url, data_dir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def swapmeter_env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SWAPMETER_ENVIRONMENT": "test",
        "SWAPMETER_DATABASE_URL": database_url,
        "SWAPMETER_DATA_DIR": str(data_dir),
        "SWAPMETER_LOG_LEVEL": "INFO",
    }


def start_args(command_name: str) -> list[str]:
    """The command, on ports nobody else uses: the check must stop it before it serves."""
    return {
        "api": ["api", "--host", "127.0.0.1", "--port", "0"],
        "worker": ["worker", "--metrics-port", "0"],
        "migrate": ["migrate"],
    }[command_name]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def scratch_database(servers: tuple[str, str]) -> Iterator[str]:
    """An empty database of its own (no schema), with a password in its URL."""
    server_url, _ = servers
    name = f"swapmeter_startup_{uuid.uuid4().hex[:12]}"
    server_sql(server_url, f'CREATE DATABASE "{name}"')
    # Trust authentication ignores a password; the tests check it is never shown.
    url = make_url(server_url).set(database=name)
    yield url.set(password=url.password or PASSWORD).render_as_string(hide_password=False)
    server_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("command_name", ["api", "worker", "migrate"])
def test_an_unreachable_database_is_one_line_naming_host_and_port(
    command_name: str, tmp_path: Path
) -> None:
    port = closed_port()
    url = f"postgresql://swapmeter:{PASSWORD}@127.0.0.1:{port}/swapmeter"

    done = swapmeter(*start_args(command_name), database_url=url, data_dir=tmp_path)

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"swapmeter {command_name}: cannot reach the database at 127.0.0.1:{port} "
        "(connection refused); check SWAPMETER_DATABASE_URL"
    ]
    assert PASSWORD not in done.stdout + done.stderr


def test_a_database_name_the_server_does_not_have_is_one_line(
    scratch_database: str, tmp_path: Path
) -> None:
    url = scratch_database.rsplit("/", 1)[0] + "/swapmeter_no_such_database"

    done = swapmeter("migrate", database_url=url, data_dir=tmp_path)

    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("swapmeter migrate: the database at ")
    assert line.endswith(
        'refused the connection: database "swapmeter_no_such_database" does not exist; '
        "check SWAPMETER_DATABASE_URL"
    )


@pytest.mark.parametrize("command_name", ["api", "worker"])
def test_an_empty_database_is_refused_with_a_hint_to_migrate(
    command_name: str, scratch_database: str, tmp_path: Path
) -> None:
    done = swapmeter(*start_args(command_name), database_url=scratch_database, data_dir=tmp_path)

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"swapmeter {command_name}: the database has no schema yet, this code needs {HEAD}: "
        "run swapmeter migrate"
    ]
    assert str(make_url(scratch_database).password) not in done.stdout + done.stderr


@pytest.mark.parametrize("command_name", ["api", "worker"])
def test_a_schema_behind_the_code_is_refused_then_migrate_brings_it_to_head(
    command_name: str, scratch_database: str, tmp_path: Path
) -> None:
    command.upgrade(alembic_config(scratch_database), "0005")

    refused = swapmeter(*start_args(command_name), database_url=scratch_database, data_dir=tmp_path)
    migrated = swapmeter("migrate", database_url=scratch_database, data_dir=tmp_path)

    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"swapmeter {command_name}: the database schema is at 0005, this code needs {HEAD}: "
        "run swapmeter migrate"
    ]
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == "database schema is at head"


def stamp_newer_than_the_code(database_url: str) -> None:
    """The schema as a later release would leave it: at head, stamped with a revision this
    code does not know."""

    async def stamp() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("UPDATE alembic_version SET version_num = '9999'")
        finally:
            await conn.close()

    asyncio.run(stamp())


def test_migrate_refuses_a_schema_newer_than_the_code_in_one_line(
    scratch_database: str, tmp_path: Path
) -> None:
    command.upgrade(alembic_config(scratch_database), "head")
    stamp_newer_than_the_code(scratch_database)

    done = swapmeter("migrate", database_url=scratch_database, data_dir=tmp_path)

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"swapmeter migrate: the database schema is at 9999, newer than this code "
        f"(it needs {HEAD}): run the SwapMeter version that migrated it"
    ]


@pytest.mark.parametrize("newer", [False, True], ids=["at head", "newer than the code"])
def test_a_worker_on_a_migrated_database_starts_and_stops_on_sigterm(
    scratch_database: str, redis_url: str, tmp_path: Path, newer: bool
) -> None:
    """The check lets a sound database through; a schema a newer release migrated (a
    rolling deploy, a rolled-back image) too, with a warning: a restarting old worker must
    not crash-loop on additive migrations."""
    migrated = swapmeter("migrate", database_url=scratch_database, data_dir=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    if newer:
        stamp_newer_than_the_code(scratch_database)

    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *start_args("worker")],
        cwd=REPO,
        env={**swapmeter_env(scratch_database, tmp_path), "SWAPMETER_REDIS_URL": redis_url},
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stderr is not None
        seen: list[str] = []
        for line in worker.stderr:  # ends when the worker exits (a failed check)
            seen.append(line)
            if " started (concurrency 1)" in line:
                break
        assert " started (concurrency 1)" in "".join(seen), "".join(seen)
        warning = (
            f"swapmeter worker: warning: the database schema is at 9999, newer than this "
            f"code ({HEAD}); starting anyway: upgrade this deployment soon\n"
        )
        assert (warning in seen) is newer, "".join(seen)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)


def test_a_worker_without_the_models_every_swap_needs_does_not_start(
    scratch_database: str, tmp_path: Path
) -> None:
    """It would take jobs from the queue only to fail each one (503 ModelNotInstalled)
    while healthy workers sat idle: it says what to install and stops instead."""
    migrated = swapmeter("migrate", database_url=scratch_database, data_dir=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    empty = tmp_path / "no-models"
    empty.mkdir()
    worker = subprocess.run(
        [sys.executable, "-m", "app.cli", *start_args("worker")],
        cwd=REPO,
        env={**swapmeter_env(scratch_database, tmp_path), "SWAPMETER_MODELS_DIR": str(empty)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 1
    assert worker.stderr.strip() == (
        f"swapmeter worker: models not installed in {empty}: yunet; install them with "
        "swapmeter models fetch yunet (or swapmeter models import), or check "
        "SWAPMETER_MODELS_DIR"
    )
