"""``telehub serve``: HTTP, the DICOM receiver, the outbox relay and (in the embedded mode) a
Celery worker, started in that order and stopped in reverse."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from telehub.app import create_app
from telehub.config import Settings
from telehub.db.migrate import upgrade
from telehub.demo import banner, seed_demo
from telehub.outbox import OutboxRelay
from telehub.services import Services

log = logging.getLogger(__name__)


def start_embedded_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """A real Celery worker on the local broker, as a child that dies with us."""
    env = {**os.environ, **settings.as_environment()}
    cmd = [
        sys.executable,
        "-m",
        "telehub",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(settings.worker_concurrency),
        "--exit-with-parent",
    ]
    return subprocess.Popen(cmd, env=env)


class WorkerSupervisor:
    """Keeps the embedded worker running: a worker that exits is logged and started again
    (its unfinished jobs come back through the outbox)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = start_embedded_worker(settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(2.0):
            code = self.process.poll()
            if code is not None and not self._stop.is_set():
                log.error("embedded worker exited with %s; starting a new one", code)
                self.process = start_embedded_worker(self.settings)

    def stop(self) -> None:
        self._stop.set()
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def _serve_http(services: Services, relay: OutboxRelay, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="api"))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(services, relay.kick), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, services.settings.http_host, services.settings.http_port)
    await site.start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(settings: Settings, demo: bool = False) -> None:
    from dicom.scp import start_scp
    from workers.app import configure, publish

    services = Services.from_settings(settings)
    revision = upgrade(services.db)
    log.info("database at schema revision %s", revision)
    if demo and seed_demo(services.db):
        log.info("demo consortium created")
    configure(settings)
    relay = OutboxRelay(services.db, publish, settings.outbox_redeliver_seconds)
    relay.start()
    relay.kick()  # anything left from before a restart goes out now
    worker = WorkerSupervisor(settings) if settings.run_embedded_worker else None
    scp = start_scp(services, on_studies_complete=lambda _cases: relay.kick())
    http_url = f"http://{settings.http_host}:{settings.http_port}"
    stop = asyncio.Event()
    try:
        if demo:
            print(banner(http_url, settings.dicom_port, settings.ae_title), flush=True)
        log.info(
            "telehub serving %s, DICOM %s on port %s, worker %s",
            http_url,
            settings.ae_title,
            settings.dicom_port,
            "embedded" if worker else "external",
        )
        asyncio.run(_serve_http(services, relay, stop))
    finally:
        log.info("shutting down")
        scp.shutdown()
        relay.stop()
        if worker is not None:
            worker.stop()
        services.close()
