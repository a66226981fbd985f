"""Fixtures that start real things: hub processes, a worker, an S3 server, fresh databases.

Scaled-mode services (PostgreSQL, Redis, RabbitMQ) are the machine's own. When one is missing
the test is skipped on a developer's machine, and fails under CI=true.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from telehub.db import Database
from telehub.db.migrate import upgrade
from telehub.demo import seed_demo
from tests.helpers import (
    PG_ADMIN_URL,
    REDIS_URL,
    Hub,
    S3Server,
    free_port,
    need_service,
    start_hub,
    wait_port,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The demo consortium in a fresh database, once on SQLite and once on PostgreSQL."""
    url = (
        f"sqlite:///{tmp_path / 'hub.sqlite3'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    database = Database(url)
    upgrade(database)
    seed_demo(database)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def embedded_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One hub in the embedded default: SQLite, folder store, filesystem broker, child worker."""
    tmp = tmp_path_factory.mktemp("embedded")
    hub = start_hub(tmp)
    yield hub
    hub.proc.stop()


# ----- scaled-mode services ------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        need_service("PostgreSQL", str(exc).splitlines()[0])
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"telehub_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield postgres_admin_url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:
        need_service("Redis", str(exc))
    return REDIS_URL


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """An S3-protocol server on loopback (moto's server mode), spoken to over real HTTP."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_port(port)
        yield S3Server(f"127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    from kombu import Connection

    url = os.environ.get("TELEHUB_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        need_service("RabbitMQ", str(exc))
    return url


@pytest.fixture(scope="session")
def dcmtk() -> None:
    """DCMTK's storescu/findscu/movescu/getscu on PATH (installed from Debian if missing)."""
    from tests.helpers import need_dcmtk

    need_dcmtk()


# ----- browser tests -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    """Debian's Chromium under Playwright, one per test module: Playwright's sync API keeps an
    event loop running in the main thread while it lives, which would break any later test
    that calls asyncio.run() (e.g. the consult media tests) if it lived for the session."""
    from tests.browser import chromium

    with chromium() as b:
        yield b


@pytest.fixture(scope="session")
def web_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The hub the browser tests use (embedded default, demo consortium)."""
    tmp = tmp_path_factory.mktemp("web")
    hub = start_hub(tmp, name="web")
    yield hub
    hub.proc.stop()
