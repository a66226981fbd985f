"""The one way to reach the database: a :class:`Database` built from the settings' URL."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from telehub.db.types import UTCDateTime


class Database:
    """Engine plus session factory; SQLite is tuned for durable, concurrent use."""

    def __init__(self, url: str, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._write_lock: WriteLock | None = None
        if self.is_sqlite:
            # WAL lets readers run beside the single writer; busy_timeout makes writers queue,
            # not fail. Pooled connections keep the per-transaction cost low.
            path = make_url(url).database
            if path and path != ":memory:":
                self._write_lock = WriteLock(path + ".write-lock")
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
        with self._writing(), self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def _writing(self) -> Iterator[None]:
        if self._write_lock is None:
            yield
        else:
            with self._write_lock.held():
                yield

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only transaction that never waits for SQLite's write lock."""
        with self.sessions() as session, session.begin():
            session.connection(execution_options={"sqlite_begin": "DEFERRED"})
            yield session

    @contextmanager
    def cursor(self, write: bool = True) -> Iterator[Any]:
        """One transaction on a pooled DBAPI cursor, for :class:`Sql` statements: the ingest
        hot path, where even Core's per-statement work cost more than running the statements.

        Same transaction rules as :meth:`session` (SQLite writers queue on the write lock and
        BEGIN IMMEDIATE; readers BEGIN DEFERRED), and driver errors are raised as SQLAlchemy's
        (IntegrityError, OperationalError, ...) so callers handle one family of exceptions."""
        dbapi = self.engine.dialect.loaded_dbapi
        with contextlib.ExitStack() as stack:
            if write:
                stack.enter_context(self._writing())
            conn = self.engine.raw_connection()
            try:
                cursor = conn.cursor()
                if self.is_sqlite:
                    cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
                yield cursor
                conn.commit()
            except dbapi.Error as exc:  # type: ignore[union-attr]
                _rollback_quietly(conn)
                if self.engine.dialect.is_disconnect(exc, conn.dbapi_connection, None):
                    conn.invalidate(exc)
                raise DBAPIError.instance(None, None, exc, dbapi.Error) from exc  # type: ignore[union-attr]
            except BaseException:
                _rollback_quietly(conn)
                raise
            finally:
                conn.close()

    def sql(self, statement: Sql) -> str:
        """``statement`` in this database's parameter style."""
        pyformat = self.engine.dialect.paramstyle == "pyformat"
        return statement.pyformat if pyformat else statement.text

    @functools.cached_property
    def bind_time(self) -> Callable[[datetime], Any]:
        """Turns an aware datetime into what a :class:`~telehub.db.types.UTCDateTime` column
        stores, for :class:`Sql` statements."""
        dialect = self.engine.dialect
        process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        return process or (lambda value: value)

    def dispose(self) -> None:
        self.engine.dispose()


class WriteLock:
    """Queue SQLite writers on a lock that wakes the next one the moment it is free.

    SQLite allows one writer; the others wait in its busy handler, which polls with sleeps that
    grow to 100 ms. With several receiving processes and threads committing hundreds of short
    transactions a second, those sleeps, not the work, would set the pace. A thread lock (for
    this process's threads) plus an flock on a file beside the database (for the other
    processes) hand the write lock over without polling. Re-entrant within a thread.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._threads = threading.RLock()
        self._depth = threading.local()

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._threads:
            depth = getattr(self._depth, "n", 0)
            if depth == 0:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth.n = depth + 1
            try:
                yield
            finally:
                self._depth.n = depth
                if depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)


class Sql:
    """Plain SQL with ``:name`` parameters, run on :meth:`Database.cursor` in the database's
    own parameter style (SQLite takes ``:name``, psycopg ``%(name)s``)."""

    def __init__(self, text: str) -> None:
        self.text = " ".join(text.split())
        self.pyformat = re.sub(r":(\w+)", r"%(\1)s", self.text.replace("%", "%%"))


def _rollback_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.rollback()


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
