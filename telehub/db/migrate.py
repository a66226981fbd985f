"""Schema migrations with Alembic, driven from code so no alembic.ini has to be found."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from telehub.db import Database

MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK_ID = 0x7E1E_4B  # pg advisory lock key for "telehub migrate"


def alembic_config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def upgrade(db: Database) -> str:
    """Bring the schema to the newest revision; returns that revision."""
    cfg = alembic_config(db)
    with db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Several hub processes may start at once: one migrates, the others wait.
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({_LOCK_ID})")
            connection.commit()
        try:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
            connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_LOCK_ID})")
                connection.commit()
    return head_revision()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    script = ScriptDirectory(str(MIGRATIONS))
    return script.get_current_head() or ""
