"""Run Alembic programmatically: ``swapmeter migrate`` and the test fixtures use this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def migration_scripts() -> ScriptDirectory:
    """The migration scripts: the schema this code needs (their head) and those it knows."""
    return ScriptDirectory(str(MIGRATIONS_DIR))


def upgrade_to_head(database_url: str) -> None:
    """Bring the schema to head; a no-op when it is already there."""
    command.upgrade(alembic_config(database_url), "head")
