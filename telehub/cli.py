"""The ``telehub`` command line."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click

from telehub.config import ConfigError, Settings

_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    help="TOML file with a [telehub] table (TELEHUB_* variables override it).",
)


def _settings(config_file: str | None, **overrides: object) -> Settings:
    try:
        return Settings.load(config_file, **overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@click.group()
@click.version_option(package_name="telehub")
def main() -> None:
    """telehub: remote diagnosis for medical consortia."""


@main.command()
@_config_option
@click.option("--demo", is_flag=True, help="Create the demo consortium and print its accounts.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), help="Data folder.")
@click.option("--http-port", type=int)
@click.option("--dicom-port", type=int)
def serve(
    config_file: str | None,
    demo: bool,
    data: Path | None,
    http_port: int | None,
    dicom_port: int | None,
) -> None:
    """Run the hub: HTTP API and web, DICOM receiver, and (embedded mode) a worker."""
    from telehub.serve import serve as run

    settings = _settings(config_file, data=data, http_port=http_port, dicom_port=dicom_port)
    _logging(settings.log_level)
    run(settings, demo=demo)


@main.command()
@_config_option
@click.option("--concurrency", "-c", type=int, help="Worker threads or processes.")
@click.option("--pool", type=click.Choice(["prefork", "threads", "solo"]), default="prefork")
@click.option("--exit-with-parent", is_flag=True, hidden=True)
def worker(
    config_file: str | None, concurrency: int | None, pool: str, exit_with_parent: bool
) -> None:
    """Run a Celery worker against the configured broker."""
    from workers.app import QUEUE, configure

    settings = _settings(config_file)
    _logging(settings.log_level)
    app = configure(settings)
    if exit_with_parent:
        _exit_with_parent()
    app.worker_main(
        [
            "worker",
            "--loglevel",
            settings.log_level,
            "--pool",
            pool,
            "--concurrency",
            str(concurrency or settings.worker_concurrency),
            "--queues",
            QUEUE,
            "--without-mingle",
            "--without-gossip",
            "--hostname",
            f"telehub-{os.getpid()}@%h",
        ]
    )


def _exit_with_parent() -> None:
    """Stop when the process that started us is gone, so no orphan worker is left behind."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@main.command()
@_config_option
def migrate(config_file: str | None) -> None:
    """Create or upgrade the database schema."""
    from telehub.db import Database
    from telehub.db.migrate import upgrade

    settings = _settings(config_file)
    _logging(settings.log_level)
    settings.data.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    click.echo(f"database at revision {upgrade(db)}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=11112, show_default=True, type=int)
@click.option("--aet", "calling_aet", required=True, help="Our calling AE title, e.g. CLINIC1.")
@click.option("--called", "called_aet", default="TELEHUB", show_default=True)
@click.option(
    "--http", "http_url", help="Hub URL for ECG files (WFDB, XML, zip), e.g. http://127.0.0.1:8080."
)
@click.option(
    "--user", help="Account for the HTTP upload; password from TELEHUB_PASSWORD or a prompt."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def send(
    paths: tuple[str, ...],
    host: str,
    port: int,
    calling_aet: str,
    called_aet: str,
    http_url: str | None,
    user: str | None,
    quiet: bool,
) -> None:
    """Send studies and ECGs to a hub, as a clinic's devices would: DICOM files by C-STORE,
    other ECG files (WFDB records, aECG XML, zips) by HTTP upload."""
    from dicom.send import find_dicom_files, send_paths
    from ecg.upload import split_ecg_files, upload_ecgs

    dicom_files, ecg_groups = split_ecg_files(find_dicom_files(paths))
    failed = False
    if ecg_groups:
        if not http_url or not user:
            raise click.UsageError("ECG files need --http URL and --user to upload over HTTP")
        password = os.environ.get("TELEHUB_PASSWORD") or click.prompt(
            f"password for {user}", hide_input=True
        )
        for outcome in upload_ecgs(http_url, user, password, ecg_groups):
            names = ", ".join(Path(f).name for f in outcome.files)
            if outcome.error:
                failed = True
                click.echo(f"  refused {names}: {outcome.error}", err=True)
            else:
                click.echo(f"uploaded {names}: case {outcome.case_id}")
    if dicom_files:
        result = send_paths(dicom_files, host, port, calling_aet, called_aet, progress=not quiet)
        rate = result.sent / result.seconds if result.seconds else 0.0
        click.echo(
            f"sent {result.sent} instance(s), {result.bytes_sent / 1e6:.1f} MB in "
            f"{result.seconds:.1f} s ({rate:.0f}/s); refused {len(result.refused)}"
        )
        for refused in result.refused:
            click.echo(f"  refused {refused.path}: {refused.reason}", err=True)
        failed = failed or bool(result.refused)
    if failed:
        sys.exit(1)
