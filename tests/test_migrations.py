"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL
(a model change without its migration fails here, not in production)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from telehub.db import Database
from telehub.db.migrate import upgrade
from telehub.db.models import Base


def _differences(url: str) -> list:
    db = Database(url)
    try:
        upgrade(db)
        with db.engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        db.dispose()


def test_sqlite_schema_matches_models(tmp_path: Path) -> None:
    assert _differences(f"sqlite:///{tmp_path / 'schema.sqlite3'}") == []


def test_postgresql_schema_matches_models(postgres_url: str) -> None:
    assert _differences(postgres_url) == []
