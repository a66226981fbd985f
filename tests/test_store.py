"""The object store's two backends behave alike; S3 is exercised against a real S3 server."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from telehub.store import FilesystemStore, ObjectNotFound, ObjectStore, S3Store, open_store
from tests.helpers import S3Server


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "filesystem":
        return open_store(str(tmp_path / "objects"))
    server: S3Server = request.getfixturevalue("s3_server")
    s3 = open_store(server.url(f"store-{uuid.uuid4().hex[:16]}"))
    assert isinstance(s3, S3Store)
    s3.ensure_bucket()
    return s3


def test_put_get_delete(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    payload = os.urandom(3 * 1024 * 1024 + 17)  # spans several copy chunks
    src.write_bytes(payload)
    stored = store.put_file("dicom/ab/1.2/1.2.3/1.2.3.4.dcm", src)
    assert stored.size == len(payload)

    assert stored.sha256 == hashlib.sha256(payload).hexdigest()
    assert store.exists("dicom/ab/1.2/1.2.3/1.2.3.4.dcm")
    with store.open("dicom/ab/1.2/1.2.3/1.2.3.4.dcm") as fh:
        assert fh.read() == payload
    store.put_bytes("reports/1.txt", b"hello")
    assert sorted(store.keys()) == ["dicom/ab/1.2/1.2.3/1.2.3.4.dcm", "reports/1.txt"]
    assert list(store.keys("reports/")) == ["reports/1.txt"]
    store.delete("reports/1.txt")
    assert not store.exists("reports/1.txt")
    with pytest.raises(ObjectNotFound):
        store.open("reports/1.txt")
    store.check()


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../../b", "", "sp ace"])
def test_keys_are_checked(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")


def test_filesystem_write_is_atomic(tmp_path: Path) -> None:
    """A failed write leaves neither a partial object nor a temporary file behind."""
    store = FilesystemStore(tmp_path / "objects")
    with pytest.raises(OSError):
        store.put_file("a/b.dcm", tmp_path / "does-not-exist")
    assert not store.exists("a/b.dcm")
    assert list((tmp_path / "objects" / ".tmp").iterdir()) == []
