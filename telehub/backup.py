"""Backup and restore of the embedded default (SQLite + object folder + spool), hub running.

A backup is a folder: ``telehub.sqlite3`` (a consistent snapshot taken with SQLite's online
backup API, so the hub keeps receiving), ``objects/`` and ``spool/`` (copies), and
``manifest.json``. The order makes it consistent without stopping anything: the spool first
(what was acknowledged but not yet moved on), then the database, then the objects. Ingest
writes an object before it indexes it, so every object the snapshot names is already in the
folder when it is copied. Scaled mode (PostgreSQL, S3) is backed up with the tools of those
systems instead (docs/operations.md).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from telehub.config import Settings

DATABASE = "telehub.sqlite3"
MANIFEST = "manifest.json"
FORMAT = 1


class BackupError(RuntimeError):
    """A backup or restore that cannot be done (scaled mode, a target in use, damage)."""


@dataclass
class Manifest:
    format: int
    created_at: str
    telehub_version: str
    database_revision: str
    instances: int
    cases: int
    objects: int
    object_bytes: int
    spool_files: int


def _sqlite_path(settings: Settings) -> Path:
    url = settings.resolved_database_url
    if not url.startswith("sqlite:///"):
        raise BackupError(
            "the database is not the embedded SQLite: back it up with pg_dump or "
            "pg_basebackup (docs/operations.md)"
        )
    return Path(url.removeprefix("sqlite:///"))


def _object_root(settings: Settings) -> Path:
    url = settings.resolved_storage_url
    if "://" in url:
        raise BackupError(
            "objects are in S3: keep the bucket versioned and mirrored (mc mirror, "
            "docs/operations.md)"
        )
    return Path(url)


def _copy_tree(src: Path, dest: Path, skip: tuple[str, ...] = ()) -> tuple[int, int]:
    """Copy regular files below ``src``; files that vanish meanwhile (moved on by the running
    hub) are skipped. Returns (files, bytes)."""
    files = size = 0
    if not src.is_dir():
        return files, size
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            source = Path(dirpath, name)
            target = dest / source.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(source, target)
            except FileNotFoundError:
                continue
            files += 1
            size += target.stat().st_size
    return files, size


def _snapshot(database: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (WAL included), in one step."""
    if not database.is_file():
        raise BackupError(f"no database at {database}")
    src = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=60)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        dst.close()
        src.close()


def _scalar(db: sqlite3.Connection, sql: str) -> str:
    try:
        row = db.execute(sql).fetchone()
    except sqlite3.DatabaseError:
        return ""
    return str(row[0]) if row else ""


def backup(settings: Settings, dest: Path) -> Manifest:
    """Back the hub's data folder up into ``dest`` (which must not exist or be empty)."""
    database, objects = _sqlite_path(settings), _object_root(settings)
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty")
    if dest.resolve().is_relative_to(settings.data.resolve()):
        raise BackupError("the backup cannot go inside the data folder it copies")
    dest.mkdir(parents=True, exist_ok=True)
    spool_files, _ = _copy_tree(settings.spool, dest / "spool")
    _snapshot(database, dest / DATABASE)
    object_files, object_bytes = _copy_tree(objects, dest / "objects", skip=(".tmp",))
    db = sqlite3.connect(dest / DATABASE)
    try:
        manifest = Manifest(
            format=FORMAT,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            telehub_version=version("telehub"),
            database_revision=_scalar(db, "SELECT version_num FROM alembic_version"),
            instances=int(_scalar(db, "SELECT count(*) FROM instances") or 0),
            cases=int(_scalar(db, "SELECT count(*) FROM cases") or 0),
            objects=object_files,
            object_bytes=object_bytes,
            spool_files=spool_files,
        )
    finally:
        db.close()
    missing = _missing_objects(dest / DATABASE, dest / "objects")
    if missing:
        raise BackupError(f"{len(missing)} indexed objects were not copied, e.g. {missing[0]}")
    (dest / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def _missing_objects(database: Path, objects: Path) -> list[str]:
    """Keys the index names (instances, ECG originals and waveforms) absent from ``objects``."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        keys = [k for (k,) in db.execute("SELECT object_key FROM instances")]
        for waveform, originals in db.execute(
            "SELECT waveform_key, original_keys FROM ecg_records"
        ):
            keys.append(waveform)
            keys.extend(json.loads(originals or "[]"))
    finally:
        db.close()
    return [k for k in keys if not (objects / k).is_file()]


def restore(src: Path, settings: Settings) -> Manifest:
    """Restore a backup into the (new or empty) data folder of ``settings``; the hub must not
    be running on it. Checks the database and that every indexed object is there."""
    database, objects = _sqlite_path(settings), _object_root(settings)
    manifest_path = src / MANIFEST
    if not manifest_path.is_file():
        raise BackupError(f"{src} is not a telehub backup (no {MANIFEST})")
    manifest = Manifest(**json.loads(manifest_path.read_text()))
    if manifest.format != FORMAT:
        raise BackupError(f"backup format {manifest.format} is not {FORMAT}")
    if database.exists() or (objects.is_dir() and any(objects.iterdir())):
        raise BackupError(f"{settings.data} already holds a hub: restore into a new folder")
    check = sqlite3.connect(f"file:{src / DATABASE}?mode=ro", uri=True)
    try:
        result = _scalar(check, "PRAGMA integrity_check")
    finally:
        check.close()
    if result != "ok":
        raise BackupError(f"the backed-up database is damaged: {result}")
    missing = _missing_objects(src / DATABASE, src / "objects")
    if missing:
        raise BackupError(f"{len(missing)} indexed objects are missing, e.g. {missing[0]}")
    database.parent.mkdir(parents=True, exist_ok=True)
    _copy_tree(src / "objects", objects)
    _copy_tree(src / "spool", settings.spool)
    shutil.copy2(src / DATABASE, database)
    return manifest
