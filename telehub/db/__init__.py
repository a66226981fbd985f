"""The one way to reach the database: a :class:`Database` built from the settings' URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


class Database:
    """Engine plus session factory; SQLite is tuned for durable, concurrent use."""

    def __init__(self, url: str, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            # WAL lets readers run beside the single writer; busy_timeout makes writers queue,
            # not fail. Pooled connections keep the per-transaction cost low.
            self.engine: Engine = create_engine(
                url,
                echo=echo,
                pool_size=8,
                max_overflow=24,
                connect_args={"check_same_thread": False},
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = create_engine(
                url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True
            )
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read-write transaction: commits on success, rolls back on error.

        On SQLite it starts with BEGIN IMMEDIATE, so concurrent writers wait for the lock
        (busy_timeout) instead of failing when a read lock cannot be upgraded.
        """
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only transaction that never waits for SQLite's write lock."""
        with self.sessions() as session, session.begin():
            session.connection(execution_options={"sqlite_begin": "DEFERRED"})
            yield session

    @contextmanager
    def core(self, write: bool = True) -> Iterator[Connection]:
        """One transaction on a Core connection, without an ORM session: for the ingest hot
        path, where the session's bookkeeping costs more than the statements."""
        with self.engine.connect() as conn:
            if not write:
                conn.execution_options(sqlite_begin="DEFERRED")
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed transaction survives power loss, which is what we acknowledge.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn) -> None:  # type: ignore[no-untyped-def]
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    conn.exec_driver_sql(f"BEGIN {mode}")
