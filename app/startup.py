"""Start-up checks: before a process says it has started, the database answers and holds
the schema this code was written for. A failed check is one line for the operator.

Only start-up is strict: once running, the API and the workers ride out database outages
(their loops retry), because a restart would not bring the database back any sooner.
"""

from __future__ import annotations

import asyncio
import socket

from app.core.settings import Settings, to_asyncpg_url

# SQLAlchemy, asyncpg and Alembic are imported where used: every `swapmeter` command
# imports this module (for StartupError), and most never touch the database.
CONNECT_TIMEOUT_S = 10.0
CHECK_URL = "check SWAPMETER_DATABASE_URL"


class StartupError(Exception):
    """Why this process cannot start, in one line an operator can act on."""


def check_database(database_url: str, *, for_migrate: bool = False) -> str | None:
    """Raise StartupError unless the database answers and its schema is this code's
    Alembic head; return a warning for the operator when the schema is newer than the
    code (a rolling deploy migrated first, or a rollback of the image): migrations add,
    so this code still runs on it, and a restarting old pod must not crash-loop.

    ``for_migrate``: a schema that is behind (or empty) is what ``swapmeter migrate`` is
    for; one newer than the code is an error there (it cannot migrate what it does not
    know)."""
    if not database_url:
        raise StartupError(
            "SWAPMETER_DATABASE_URL is not set (postgresql://user:pass@host:port/db)"
        )
    from app.migrate import migration_scripts

    current = asyncio.run(_schema_versions(database_url))
    scripts = migration_scripts()
    heads = set(scripts.get_heads())
    if current == heads:
        return None
    needs = ", ".join(sorted(heads))
    unknown = current - {script.revision for script in scripts.walk_revisions()}
    if unknown:
        newer = f"the database schema is at {', '.join(sorted(unknown))}, newer than this code"
        if for_migrate:
            raise StartupError(
                f"{newer} (it needs {needs}): run the SwapMeter version that migrated it"
            )
        return f"{newer} ({needs}); starting anyway: upgrade this deployment soon"
    if for_migrate:
        return None
    if not current:
        raise StartupError(
            f"the database has no schema yet, this code needs {needs}: run swapmeter migrate"
        )
    raise StartupError(
        f"the database schema is at {', '.join(sorted(current))}, this code needs {needs}: "
        "run swapmeter migrate"
    )


def check_models(settings: Settings) -> None:
    """Raise StartupError when the models every swap needs are not installed (the face
    detector; a learned swapper and its recognizer). A worker without them would take
    jobs from the queue only to fail each one, while healthy workers sat idle. (The
    enhancer is needed only by requests that ask for it: those fail with 503 instead.)"""
    if settings.jobs_swapper == "noop":
        return
    from inference.engine import models_missing

    config = settings.engine_config()
    missing = models_missing(config)
    if missing:
        raise StartupError(
            f"models not installed in {config.models_dir}: {', '.join(missing)}; install "
            f"them with swapmeter models fetch {' '.join(missing)} (or swapmeter models "
            "import), or check SWAPMETER_MODELS_DIR"
        )


async def _schema_versions(database_url: str) -> set[str]:
    """The Alembic revisions the database is at (empty when it has no schema yet)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    # The app's own URL handling (driver, query options), with no pool to linger.
    engine = create_async_engine(
        to_asyncpg_url(database_url),
        poolclass=NullPool,
        connect_args={"timeout": CONNECT_TIMEOUT_S},
    )
    try:
        try:
            connection = await engine.connect()
        except Exception as exc:  # noqa: BLE001 - unrecognised failures re-raise below
            raise StartupError(_unreachable(database_url, exc)) from exc
        try:
            # Alembic's table, found on the search path as Alembic finds it.
            if (await connection.scalar(text("SELECT to_regclass('alembic_version')"))) is None:
                return set()
            return set(await connection.scalars(text("SELECT version_num FROM alembic_version")))
        finally:
            await connection.close()
    finally:
        await engine.dispose()


def _unreachable(database_url: str, exc: BaseException) -> str:
    """The operator's line for a failed connect: where, and why; never the password."""
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(to_asyncpg_url(database_url))
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    cause = _root_cause(exc)
    if isinstance(cause, asyncpg.PostgresError):
        # The server answered and said no: the login, the database name, too many clients.
        return f"the database at {where} refused the connection: {cause}; {CHECK_URL}"
    if isinstance(cause, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(cause, TimeoutError):
        reason = f"no answer within {CONNECT_TIMEOUT_S:g} s"
    elif isinstance(cause, socket.gaierror):
        reason = f"unknown host: {cause.strerror}"
    elif isinstance(cause, OSError):
        reason = cause.strerror or str(cause) or type(cause).__name__
    else:
        raise exc  # not a connection problem we know how to explain: keep the traceback
    return f"cannot reach the database at {where} ({reason}); {CHECK_URL}"


def _root_cause(exc: BaseException) -> BaseException:
    """The driver's or the socket's error under SQLAlchemy's wrapping; else ``exc``."""
    import asyncpg

    from app.core.db import causes

    known = (OSError, TimeoutError, asyncpg.PostgresError)
    return next((cause for cause in causes(exc) if isinstance(cause, known)), exc)
