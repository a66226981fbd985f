"""The ``telehub`` command line."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from telehub.config import ConfigError, Settings

if TYPE_CHECKING:
    from telehub.db import Database

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


def _logging(settings: Settings) -> None:
    """Text for people, or one JSON object per line for a log pipeline (``log_format``)."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
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
    _logging(settings)
    run(settings, demo=demo)


@main.command()
@_config_option
@click.option("--exit-with-parent", is_flag=True, hidden=True)
def receive(config_file: str | None, exit_with_parent: bool) -> None:
    """Run one DICOM receiving process (``serve`` starts several on one port)."""
    from telehub.serve import receive as run

    settings = _settings(config_file)
    _logging(settings)
    if exit_with_parent:
        _exit_with_parent()
    run(settings)


@main.command()
@_config_option
@click.option("--concurrency", "-c", type=int, help="Worker threads or processes.")
@click.option("--pool", type=click.Choice(["prefork", "threads", "solo"]), default="prefork")
@click.option(
    "--beat",
    is_flag=True,
    help="Also run the periodic scheduler (SLA and lease checks); one per deployment.",
)
@click.option("--exit-with-parent", is_flag=True, hidden=True)
def worker(
    config_file: str | None,
    concurrency: int | None,
    pool: str,
    beat: bool,
    exit_with_parent: bool,
) -> None:
    """Run a Celery worker against the configured broker."""
    from workers.app import QUEUE, configure

    settings = _settings(config_file)
    _logging(settings)
    settings.data.mkdir(parents=True, exist_ok=True)  # beat keeps its schedule file there
    # Background work (analysis, metadata) yields the CPU to ingest on a shared machine.
    os.nice(10)
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
            *(["--beat", "--schedule", str(settings.beat_schedule_file)] if beat else []),
        ]
    )


@main.command()
@_config_option
def beat(config_file: str | None) -> None:
    """Run the periodic scheduler (Celery beat) alone: one per scaled deployment."""
    from workers.app import configure

    settings = _settings(config_file)
    _logging(settings)
    app = configure(settings)
    app.start(
        ["beat", "--loglevel", settings.log_level, "--schedule", str(settings.beat_schedule_file)]
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
    _logging(settings)
    settings.data.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    click.echo(f"database at revision {upgrade(db)}")


@main.command()
@_config_option
@click.option("--grace-seconds", type=float, help="Orphan age to remove (default: the setting).")
@click.option("--quiet-seconds", type=float, help="Abandoned-study quiet (default: the setting).")
def recover(
    config_file: str | None, grace_seconds: float | None, quiet_seconds: float | None
) -> None:
    """Finish what crashed processes left: complete abandoned studies, remove orphaned objects
    and this data folder's stale spool temporaries (the worker's beat does this periodically)."""
    import json

    from telehub import recovery
    from telehub.services import Services

    settings = _settings(config_file)
    _logging(settings)
    svc = Services.from_settings(settings)
    try:
        quiet = settings.abandoned_study_seconds if quiet_seconds is None else quiet_seconds
        grace = settings.orphan_grace_seconds if grace_seconds is None else grace_seconds
        cases = recovery.complete_abandoned_studies(svc.db, quiet) if quiet > 0 else []
        swept = recovery.sweep_orphans(svc.db, svc.store, grace)
        temp = recovery.sweep_spool_temp(settings.spool, grace)
        if svc.mover is not None:
            svc.mover.move_all()  # what this folder still spools goes out before we stop
    finally:
        svc.close()
    click.echo(
        json.dumps(
            {
                "completed_cases": len(cases),
                "objects_checked": swept.checked,
                "orphans": swept.orphans,
                "orphans_removed": swept.removed,
                "spool_temp_removed": temp,
            }
        )
    )


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=11112, show_default=True, type=int)
@click.option(
    "--aet", "calling_aet", help="Our calling AE title, e.g. CLINIC1: DICOM files go by C-STORE."
)
@click.option("--called", "called_aet", default="TELEHUB", show_default=True)
@click.option("--tls-ca", type=click.Path(exists=True), help="DICOM TLS: CA of the hub's cert.")
@click.option("--tls-cert", type=click.Path(exists=True), help="DICOM TLS: our client certificate.")
@click.option("--tls-key", type=click.Path(exists=True), help="DICOM TLS: our client key.")
@click.option(
    "--http",
    "http_url",
    help="Hub URL, e.g. https://hub.example:8080: ECG files (WFDB, XML, zip) go there, and DICOM "
    "files too (resumable upload) unless --aet is given.",
)
@click.option(
    "--user", help="Account for the HTTP upload; password from TELEHUB_PASSWORD or a prompt."
)
@click.option(
    "--stow-only",
    is_flag=True,
    help="DICOM over plain STOW-RS, one request per batch, to the DICOMweb root given as --http "
    "(e.g. http://orthanc:8042/dicom-web) instead of the hub's resumable uploads.",
)
@click.option("--batch-mb", default=16.0, show_default=True, help="DICOM batch size (HTTP).")
@click.option("--chunk-mb", default=4.0, show_default=True, help="Upload chunk size (HTTP).")
@click.option(
    "--journal",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Journal of files the hub accepted (default: in the user's cache folder).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def send(
    paths: tuple[str, ...],
    host: str,
    port: int,
    calling_aet: str | None,
    called_aet: str,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    http_url: str | None,
    user: str | None,
    stow_only: bool,
    batch_mb: float,
    chunk_mb: float,
    journal: Path | None,
    quiet: bool,
) -> None:
    """Send studies and ECGs to a hub, as a clinic's devices would: DICOM files by C-STORE
    (--aet) or by resumable HTTPS upload (--http without --aet, for clinics behind NAT), other
    ECG files (WFDB records, aECG XML, zips) by HTTP upload."""
    from dicom.send import find_dicom_files, send_paths
    from ecg.upload import split_ecg_files, upload_ecgs

    dicom_files, ecg_groups = split_ecg_files(find_dicom_files(paths))
    dicom_over_http = bool(dicom_files) and not calling_aet
    if dicom_over_http and not http_url:
        raise click.UsageError("DICOM files need --aet (C-STORE) or --http URL --user (HTTPS)")
    if (ecg_groups or (dicom_over_http and not stow_only)) and (not http_url or not user):
        what = "ECG files" if ecg_groups else "DICOM over HTTP"
        raise click.UsageError(f"{what} need --http URL and --user to upload over HTTP")
    password = None
    if user and (ecg_groups or dicom_over_http):
        password = os.environ.get("TELEHUB_PASSWORD") or click.prompt(
            f"password for {user}", hide_input=True
        )
    failed = False
    if ecg_groups:
        assert http_url and user and password is not None
        for outcome in upload_ecgs(http_url, user, password, ecg_groups):
            names = ", ".join(Path(f).name for f in outcome.files)
            if outcome.error:
                failed = True
                click.echo(f"  refused {names}: {outcome.error}", err=True)
            else:
                click.echo(f"uploaded {names}: case {outcome.case_id}")
    if dicom_over_http:
        from dicom.send_http import send_http

        assert http_url
        sent = send_http(
            dicom_files,
            http_url,
            user,
            password,
            batch_bytes=int(batch_mb * 1024 * 1024),
            chunk_bytes=int(chunk_mb * 1024 * 1024),
            progress=not quiet,
            stow_only=stow_only,
            journal=journal,
        )
        click.echo(
            f"uploaded {sent.bytes_sent / 1e6:.1f} MB in {sent.seconds:.1f} s: accepted "
            f"{sent.accepted} instance(s), already on the hub {sent.skipped}, "
            f"refused {len(sent.refused)}"
        )
        for refused in sent.refused:
            click.echo(f"  refused {refused.path}: {refused.reason}", err=True)
        failed = failed or bool(sent.refused)
    elif dicom_files:
        assert calling_aet
        from dicom.tls import client_context

        tls = client_context(tls_ca, tls_cert, tls_key) if tls_ca or tls_cert else None
        result = send_paths(
            dicom_files, host, port, calling_aet, called_aet, progress=not quiet, tls=tls
        )
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


@main.group()
def consortium() -> None:
    """Load or export the consortium definition (facilities, grids, centres, users, rules)."""


def _consortium_db(config_file: str | None) -> Database:
    from telehub.db import Database
    from telehub.db.migrate import upgrade

    settings = _settings(config_file)
    _logging(settings)
    settings.data.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    upgrade(db)
    return db


@consortium.command("load")
@_config_option
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--dry-run", is_flag=True, help="Check and print what would change; write nothing.")
def consortium_load(config_file: str | None, file: TextIO, dry_run: bool) -> None:
    """Check a consortium definition (TOML, see docs/consortium.md) and apply it in one
    transaction. Entities the file does not mention are left alone."""
    from telehub import consortium as definitions
    from telehub.errors import TelehubError
    from telehub.passwords import Policy

    db = _consortium_db(config_file)
    policy = Policy.from_settings(_settings(config_file))
    try:
        outcome = definitions.load(
            db,
            definitions.parse_toml(file.read()),
            dry_run=dry_run,
            remote="cli",
            password_policy=policy,
        )
    except definitions.ConsortiumError as exc:
        click.echo(f"{file.name}: consortium definition refused, nothing was changed:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(1)
    except TelehubError as exc:
        click.echo(f"{file.name}: {exc.message}", err=True)
        sys.exit(1)
    finally:
        db.dispose()
    click.echo(outcome.summary())


@consortium.command("export")
@_config_option
@click.option("--output", "-o", type=click.File("w", encoding="utf-8"), default="-")
@click.option(
    "--with-password-hashes",
    is_flag=True,
    help="Include the users' password hashes (so a fresh hub can be loaded from the file).",
)
def consortium_export(config_file: str | None, output: TextIO, with_password_hashes: bool) -> None:
    """Write the current consortium as a TOML definition that ``load`` takes back."""
    from telehub import consortium as definitions

    db = _consortium_db(config_file)
    try:
        with db.reader() as session:
            data = definitions.export(session, with_password_hashes=with_password_hashes)
    finally:
        db.dispose()
    output.write(definitions.to_toml(data))


# ----- backup and restore (embedded default; docs/operations.md) ----------------------------
@main.command("backup")
@_config_option
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def backup_command(config_file: str | None, dest: Path) -> None:
    """Back up SQLite, objects and spool into DEST while the hub runs."""
    import json
    from dataclasses import asdict

    from telehub.backup import BackupError, backup

    try:
        manifest = backup(_settings(config_file), dest)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(asdict(manifest)))


@main.command("restore")
@_config_option
@click.argument("src", type=click.Path(file_okay=False, exists=True, path_type=Path))
def restore_command(config_file: str | None, src: Path) -> None:
    """Restore a backup into a new data folder (then start the hub on it)."""
    import json
    from dataclasses import asdict

    from telehub.backup import BackupError, restore

    try:
        manifest = restore(src, _settings(config_file))
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(asdict(manifest)))
