"""Object store: one small interface, two backends (a local folder, S3 through ``minio``).

A ``put_*`` call returns only when the object is complete and durable: fsync and atomic rename on
disk, a completed PUT on S3. Keys are built by the hub (see :func:`instance_key`), never taken
from input, so they are checked here only as a guard against our own mistakes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,511}$")
CHUNK = 1024 * 1024


class StoreError(RuntimeError):
    """The object store could not complete an operation (the caller must not report success)."""


class ObjectNotFound(StoreError):
    pass


@dataclass(frozen=True)
class Stored:
    """What a completed write reports: the object's size and SHA-256."""

    size: int
    sha256: str


class ObjectStore(Protocol):
    def put_file(self, key: str, path: Path, known: Stored | None = None) -> Stored:
        """Store the file's bytes under ``key``; returns once they are durable. ``known``: the
        file's size and SHA-256 from a caller that hashed it as it wrote it (the receivers), so
        the file is not read again."""

    def put_bytes(self, key: str, data: bytes) -> Stored: ...

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object (the caller closes it)."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str = "") -> Iterator[str]: ...

    def check(self) -> None:
        """Raise StoreError when the store cannot be reached (readiness)."""


def instance_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """Where an instance lives; UIDs are validated at the edge, the hash spreads prefixes."""
    shard = hashlib.sha1(study_uid.encode()).hexdigest()[:2]
    return f"dicom/{shard}/{study_uid}/{series_uid}/{sop_uid}.dcm"


def _check_key(key: str) -> str:
    if not _KEY_RE.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid object key {key!r}")
    return key


class FilesystemStore:
    """Objects as files below a root folder; durable by fsync of file and folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(exist_ok=True)

    def path_of(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _commit(self, tmp_name: str, key: str) -> None:
        target = self.path_of(key)
        _make_dirs_durable(target.parent)
        os.replace(tmp_name, target)
        _fsync_dir(target.parent)

    def put_file(self, key: str, path: Path, known: Stored | None = None) -> Stored:
        """Hard-link the file in when it is on our file system (the receiver spools there),
        so a received instance is fsynced once and never copied; copy otherwise.

        A new key is linked straight to its final name and the file fsynced after that, so one
        journal commit makes both the data and the name durable (the folder's own fsync then
        finds little left to do); a key that exists (a replacement, or an orphan the sweep has
        not reached) goes through a temporary name and an atomic replace."""
        target = self.path_of(key)
        _make_dirs_durable(target.parent)
        try:
            os.link(path, target)
        except FileExistsError:
            return self._put_replacing(key, path, known)
        except OSError:
            with open(path, "rb") as src:
                return self._put(key, src)
        try:
            stored = _fsync(target, known)
            _fsync_dir(target.parent)
        except OSError as exc:
            _unlink_quietly(str(target))
            raise StoreError(f"cannot store {key}: {exc}") from exc
        return stored

    def _put_replacing(self, key: str, path: Path, known: Stored | None) -> Stored:
        tmp_name = str(self._tmp / f"link-{uuid.uuid4().hex}")
        try:
            os.link(path, tmp_name)
        except OSError:
            with open(path, "rb") as src:
                return self._put(key, src)
        try:
            stored = _fsync(tmp_name, known)
            self._commit(tmp_name, key)
        except OSError as exc:
            _unlink_quietly(tmp_name)
            raise StoreError(f"cannot store {key}: {exc}") from exc
        return stored

    def put_bytes(self, key: str, data: bytes) -> Stored:
        return self._put(key, io.BytesIO(data))

    def _put(self, key: str, src: BinaryIO) -> Stored:
        _check_key(key)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                reader = _HashingReader(src)
                shutil.copyfileobj(reader, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            self._commit(tmp_name, key)
        except OSError as exc:
            _unlink_quietly(tmp_name)
            raise StoreError(f"cannot store {key}: {exc}") from exc
        return reader.stored()

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path_of(key), "rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def delete(self, key: str) -> None:
        _unlink_quietly(self.path_of(key))

    def keys(self, prefix: str = "") -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d != ".tmp")
            for name in sorted(filenames):
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StoreError(f"object folder {self.root} is not writable")


class S3Store:
    """Objects in an S3 bucket (MinIO in production, any S3 endpoint) through ``minio``."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str | None = None,
    ) -> None:
        import urllib3
        from minio import Minio

        self.bucket = bucket
        # A few quick retries, then fail: the spool's mover tries again anyway, and a caller
        # should learn of an outage in seconds, not after minio's default minutes of backoff.
        http = urllib3.PoolManager(
            maxsize=16,
            timeout=urllib3.Timeout(connect=5, read=60),
            retries=urllib3.Retry(
                total=3, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
            ),
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )

    def ensure_bucket(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except Exception as exc:  # minio raises several unrelated types
            raise StoreError(f"cannot reach bucket {self.bucket}: {exc}") from exc

    def put_file(self, key: str, path: Path, known: Stored | None = None) -> Stored:
        size = Path(path).stat().st_size
        with open(path, "rb") as fh:
            return self._put(key, fh, size)

    def put_bytes(self, key: str, data: bytes) -> Stored:
        return self._put(key, io.BytesIO(data), len(data))

    def _put(self, key: str, stream: BinaryIO, size: int) -> Stored:
        reader = _HashingReader(stream)
        try:
            # Parts of 16 MiB keep memory bounded for large objects.
            self.client.put_object(self.bucket, _check_key(key), reader, size, part_size=16 * CHUNK)
        except ValueError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot store {key}: {exc}") from exc
        return reader.stored()

    def open(self, key: str) -> BinaryIO:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, _check_key(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectNotFound(key) from exc
            raise StoreError(f"cannot read {key}: {exc}") from exc
        except Exception as exc:
            raise StoreError(f"cannot read {key}: {exc}") from exc
        return _S3Stream(response)

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, _check_key(key))
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise StoreError(f"cannot stat {key}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, _check_key(key))
        except Exception as exc:
            raise StoreError(f"cannot delete {key}: {exc}") from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            yield obj.object_name

    def check(self) -> None:
        self.ensure_bucket()


class _HashingReader:
    """Wraps a binary stream and hashes what is read through it."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._hash = hashlib.sha256()
        self._size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self._hash.update(data)
        self._size += len(data)
        return data

    def stored(self) -> Stored:
        return Stored(self._size, self._hash.hexdigest())


class _S3Stream(io.RawIOBase):
    """A file-like view of a minio response that releases the connection on close."""

    def __init__(self, response) -> None:  # type: ignore[no-untyped-def]
        self._response = response

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self._response.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


def remove_orphans(store: ObjectStore, keys: list[str]) -> None:
    """Best-effort removal of objects no index row points at (after a failed ingest)."""
    for key in keys:
        try:
            store.delete(key)
        except Exception:
            logging.getLogger(__name__).warning("could not remove unindexed object %s", key)


def open_store(url: str) -> ObjectStore:
    """``/path`` or ``file:///path`` for a folder; ``s3://KEY:SECRET@host:port/bucket?secure=false``."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return FilesystemStore(unquote(parts.path) if parts.scheme else url)
    if parts.scheme in ("s3", "minio"):
        query = parse_qs(parts.query)
        bucket = parts.path.strip("/")
        if not bucket or not parts.hostname:
            raise ValueError(
                "S3 storage URL needs a host and a bucket: s3://KEY:SECRET@host/bucket"
            )
        endpoint = parts.hostname + (f":{parts.port}" if parts.port else "")
        return S3Store(
            endpoint=endpoint,
            bucket=bucket,
            access_key=unquote(parts.username or os.environ.get("TELEHUB_S3_ACCESS_KEY", "")),
            secret_key=unquote(parts.password or os.environ.get("TELEHUB_S3_SECRET_KEY", "")),
            secure=query.get("secure", ["false"])[0].lower() in ("1", "true", "yes"),
            region=query.get("region", [None])[0],
        )
    raise ValueError(f"unsupported storage URL scheme {parts.scheme!r}")


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as src:
        return hashlib.file_digest(src, "sha256").hexdigest()


def _fsync(path: str | Path, known: Stored | None) -> Stored:
    """fsync the file; its size and SHA-256 are ``known`` or read from it on the way."""
    with open(path, "rb", buffering=0) as src:  # unbuffered: no isatty() probe on the hot path
        if known is None:
            digest = hashlib.file_digest(src, "sha256")
            known = Stored(src.tell(), digest.hexdigest())
        os.fsync(src.fileno())
    return known


def _make_dirs_durable(folder: Path) -> None:
    """mkdir -p, fsyncing each parent that got a new entry (a new folder is only durable once
    its parent's entry is)."""
    if folder.is_dir():
        return
    _make_dirs_durable(folder.parent)
    with contextlib.suppress(FileExistsError):
        folder.mkdir()
    _fsync_dir(folder.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
