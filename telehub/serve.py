"""``telehub serve``: HTTP, the outbox relay, the DICOM receiver processes and (in the embedded
mode) a Celery worker, started in that order and stopped in reverse.

The DICOM receivers are child processes (``telehub receive``) sharing one port, because one
pynetdicom process does not scale past one core; each has its own outbox relay, so work it
queues is published at once.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from telehub.app import create_app
from telehub.config import Settings
from telehub.db import Database
from telehub.db.migrate import upgrade
from telehub.demo import banner, seed_demo
from telehub.outbox import OutboxRelay
from telehub.services import Services

log = logging.getLogger(__name__)


def _child_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "telehub", *args, "--exit-with-parent"]


def worker_command(settings: Settings) -> list[str]:
    """A real Celery worker on the configured broker, as a child that dies with us; it runs
    the periodic scheduler too (the embedded mode has exactly one worker)."""
    return _child_command(
        "worker", "--pool", "threads", "--concurrency", str(settings.worker_concurrency), "--beat"
    )


class Supervisor:
    """Keeps a child process running: one that exits is logged and started again (a worker's
    unfinished jobs come back through the outbox; a receiver's peers simply reconnect)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        settings: Settings,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.env = {**os.environ, **settings.as_environment(), **(env or {})}
        self.pass_fds = pass_fds
        self.on_exit = on_exit
        self.process = self._start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"{name}-watch", daemon=True)
        self._thread.start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command, env=self.env, pass_fds=self.pass_fds)

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            code = self.process.poll()
            if code is not None and not self._stop.is_set():
                log.error("%s exited with %s; starting a new one", self.name, code)
                if self.on_exit is not None:
                    self.on_exit()
                self.process = self._start()

    def stop(self) -> None:
        self._stop.set()
        self.process.terminate()

    def wait(self) -> None:
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def stop_all(children: list[Supervisor]) -> None:
    for child in children:
        child.stop()
    for child in children:
        child.wait()


async def _serve_http(services: Services, relay: OutboxRelay, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="api"))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(services, relay.kick), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, services.settings.http_host, services.settings.http_port)
    await site.start()
    # Everything made during start-up lives as long as the process: keep it out of the
    # collector's full passes, which otherwise stop every thread for 30-40 ms now and then
    # (bench/worklist.py: in-process worklist p99 45 -> 13 ms).
    gc.collect()
    gc.freeze()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _prepare_database(settings: Settings, demo: bool) -> None:
    """Migrate (and with --demo seed) in a short-lived child process: the demo passwords'
    argon2 hashing (64 MiB each, by design) and Alembic's imports then never count against the
    long-running hub's memory. Forked before the hub starts any thread."""
    child = multiprocessing.get_context("fork").Process(
        target=_migrate_and_seed, args=(settings, demo), name="telehub-migrate"
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"database preparation failed (exit code {child.exitcode}); see above")


def _migrate_and_seed(settings: Settings, demo: bool) -> None:
    settings.data.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    try:
        log.info("database at schema revision %s", upgrade(db))
        if demo and seed_demo(db):
            log.info("demo consortium created")
    finally:
        db.dispose()


def serve(settings: Settings, demo: bool = False) -> None:
    from workers.app import configure, publish

    _prepare_database(settings, demo)
    services = Services.from_settings(settings)
    configure(settings)
    relay = OutboxRelay(services.db, publish, settings.outbox_redeliver_seconds)
    relay.start()
    relay.kick()  # anything left from before a restart goes out now
    from dicom import receiver_load
    from dicom.scp import LISTEN_FD_ENV, listen

    # One listening socket for all receiving processes (opened here, so a port in use fails
    # the start with a clear error instead of a restart loop).
    dicom_socket = listen(settings.dicom_host, settings.dicom_port)
    # Nothing of ours is in flight yet: temporaries in the spool are a crashed run's leftovers.
    from telehub.recovery import sweep_spool_temp

    sweep_spool_temp(settings.spool, grace_seconds=0)
    load_fd = receiver_load.create(settings.receiver_processes)
    board = receiver_load.LoadBoard(load_fd)
    services.receivers = board.counts  # for /readyz
    children = [
        Supervisor(
            f"dicom-receiver-{i + 1}",
            _child_command("receive"),
            settings,
            env={
                LISTEN_FD_ENV: str(dicom_socket.fileno()),
                receiver_load.LOAD_FD_ENV: str(load_fd),
                receiver_load.LOAD_SLOT_ENV: str(i),
            },
            pass_fds=(dicom_socket.fileno(), load_fd),
            on_exit=functools.partial(board.leave, i),
        )
        for i in range(settings.receiver_processes)
    ]
    if settings.run_embedded_worker:
        children.append(Supervisor("worker", worker_command(settings), settings))
    http_url = f"http://{settings.http_host}:{settings.http_port}"
    stop = asyncio.Event()
    try:
        if demo:
            print(banner(http_url, settings.dicom_port, settings.ae_title), flush=True)
        log.info(
            "telehub serving %s, DICOM %s on port %s (%d receiving processes), worker %s",
            http_url,
            settings.ae_title,
            settings.dicom_port,
            settings.receiver_processes,
            "embedded" if settings.run_embedded_worker else "external",
        )
        asyncio.run(_serve_http(services, relay, stop))
    finally:
        log.info("shutting down")
        stop_all(children)
        dicom_socket.close()
        os.close(load_fd)
        relay.stop()
        services.close()


def receive(settings: Settings) -> None:
    """One DICOM receiving process (``telehub receive``); ``serve`` starts several."""
    from dicom.scp import start_scp
    from workers.app import configure, publish

    services = Services.from_settings(settings)
    configure(settings)
    relay = OutboxRelay(services.db, publish, settings.outbox_redeliver_seconds)
    relay.start()
    scp = start_scp(services, on_studies_complete=lambda _cases: relay.kick())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        scp.shutdown()
        relay.stop()
        services.close()
