"""Faults (issue 8): the S3 endpoint, the broker and the database stop in the middle of an
ingest. No false success (an acknowledged instance is durable and ends up where it belongs),
a clear failure status for what the hub could not keep, and clean recovery: nothing lost,
nothing doubled, every case routed exactly once. (kill -9 at random moments, fifty times, is
bench/faults/kill_ingest.py; one worker killed mid-task is tests/test_scale_out.py.)

Each test stops a server of its own (a moto S3 server, a redis-server, a PostgreSQL cluster
made with initdb), never the machine's shared ones.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import func, select

from dicom.net import NODELAY_HANDLERS
from telehub.db import Database
from telehub.db.models import Case, CaseEvent, Instance, OutboxMessage, Study
from tests.helpers import (
    IN_CI,
    Hub,
    Response,
    S3Server,
    dataset_bytes,
    free_port,
    fresh_copy,
    poll,
    start_hub,
    wait_port,
)

SETTLED = {"routed", "claimed"}


# ----- sending, one status per instance ------------------------------------------------------
def c_store(
    port: int, aet: str, paths: list[Path], before_release: Callable[[], None] | None = None
) -> dict[Path, int | None]:
    """Send ``paths`` over one association; each path's C-STORE status (None: no answer).
    ``before_release`` runs after the last C-STORE, before the association ends."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    statuses: dict[Path, int | None] = dict.fromkeys(paths)
    assoc = ae.associate("127.0.0.1", port, ae_title="TELEHUB", evt_handlers=NODELAY_HANDLERS)
    if not assoc.is_established:
        return statuses
    try:
        for path in paths:
            status = assoc.send_c_store(path)
            statuses[path] = getattr(status, "Status", None)
            if statuses[path] is None:
                break
        if before_release is not None:
            before_release()
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def stow(hub: Hub, token: str, paths: list[Path]) -> Response:
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p.read_bytes()
            for p in paths
        )
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return hub.api.request(
        "POST",
        "/dicomweb/studies",
        token,
        raw=body,
        content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


def study(folder: Path, n: int = 3) -> list[Path]:
    study_uid = pydicom.uid.generate_uid()
    patient = f"FAULT-{uuid.uuid4().hex[:8]}"
    return [
        fresh_copy("CT_small.dcm", folder, study_uid=study_uid, PatientID=patient) for _ in range(n)
    ]


def sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def routed_once(db: Database, study_uids: set[str]) -> bool:
    """Every one of these studies is in one settled case, routed exactly once, and the outbox
    is empty."""
    with db.reader() as session:
        cases = session.execute(
            select(Study.study_uid, Case.id, Case.status)
            .join(Case, Case.id == Study.case_id)
            .where(Study.study_uid.in_(study_uids))
        ).all()
        routed = Counter(
            session.scalars(select(CaseEvent.case_id).where(CaseEvent.kind == "routed"))
        )
        pending = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.done_at.is_(None))
        )
    return (
        {c.study_uid for c in cases} == study_uids
        and all(c.status in SETTLED and routed[c.id] == 1 for c in cases)
        and pending == 0
    )


def indexed(db: Database) -> Counter[str]:
    with db.reader() as session:
        return Counter(session.scalars(select(Instance.sop_uid)))


# ----- (a) the S3 endpoint stops -------------------------------------------------------------
def test_s3_stopped_mid_ingest_acknowledged_means_spooled_then_moved(tmp_path: Path) -> None:
    """With S3 gone, the hub still acknowledges, because an acknowledged instance is fsynced in
    its spool (readable from there at once); the spool mover uploads it when S3 is back."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    wait_port(port)
    s3 = S3Server(f"127.0.0.1:{port}")
    bucket = f"faults-{uuid.uuid4().hex[:8]}"
    hub = start_hub(tmp_path, {"TELEHUB_STORAGE_URL": s3.url(bucket)})
    sent: list[Path] = []
    try:
        token = hub.api.login("clinic")
        before = study(tmp_path / "before")
        assert set(c_store(hub.dicom_port, "CLINIC1", before).values()) == {0x0000}
        sent += before
        client = s3.client()

        def bucket_keys() -> set[str]:
            return {o.object_name for o in client.list_objects(bucket, "dicom/", recursive=True)}

        poll("the first study in S3", lambda: len(bucket_keys()) == len(before))

        moto.stop()  # the endpoint is gone: connections are refused from now on
        during = study(tmp_path / "during")
        statuses = c_store(hub.dicom_port, "CLINIC1", during)
        web = study(tmp_path / "web")
        stow_status = stow(hub, token, web).status
        # Acknowledged (the design: the spool takes the write), so it must be durable now.
        assert set(statuses.values()) == {0x0000} and stow_status == 200
        sent += during + web
        spool = hub.data / "spool" / "objects"
        spooled = {p.name for p in spool.rglob("*.dcm")}
        assert {f"{sop(p)}.dcm" for p in during + web} <= spooled
        # Readable while S3 is down (reads look in the spool first) ...
        one = during[0]
        ds = pydicom.dcmread(one, stop_before_pixels=True)
        resp = hub.api.request(
            "GET",
            f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}",
            token,
        )
        assert resp.status == 200
        # ... and readiness says plainly which dependency is missing.
        ready = hub.api.get("/readyz")
        assert ready.status == 503 and not ready.body["checks"]["object_store"]["ok"]
        assert ready.body["checks"]["object_store"]["error"]

        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto.start()  # same port, same (in-process) state: as if the endpoint came back
        wait_port(port)
        poll("everything moved to S3", lambda: len(bucket_keys()) == len(sent), 60)
        poll("the spool empty", lambda: not list(spool.rglob("*.dcm")))
        poll("ready again", lambda: hub.api.get("/readyz").status == 200)

        db = Database(f"sqlite:///{hub.data / 'telehub.sqlite3'}")
        try:
            assert indexed(db) == Counter(sop(p) for p in sent)
            with db.reader() as session:
                keys = dict(session.execute(select(Instance.sop_uid, Instance.object_key)).all())
            for path in sent:
                response = client.get_object(bucket, keys[sop(path)])
                try:
                    assert dataset_bytes(response.read()) == dataset_bytes(path.read_bytes())
                finally:
                    response.close()
                    response.release_conn()
            studies = {
                str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in sent
            }
            poll("every case routed once", lambda: routed_once(db, studies))
        finally:
            db.dispose()
    finally:
        hub.proc.stop()
        moto.stop()


# ----- (b) the broker stops ------------------------------------------------------------------
@dataclass
class RedisServer:
    port: int
    folder: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.popen = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if not shutil.which("redis-server"):
        if IN_CI:
            pytest.fail("redis-server is not installed (CI=true)")
        pytest.skip("redis-server is not installed")
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


def test_broker_stopped_ingest_succeeds_and_routing_catches_up(
    tmp_path: Path, postgres_url: str, private_redis: RedisServer
) -> None:
    """The broker is down: C-STORE and STOW-RS still succeed (routing waits in the outbox,
    committed with the study); when the broker is back, every case is routed exactly once."""
    hub = start_hub(
        tmp_path,
        {
            "TELEHUB_DATABASE_URL": postgres_url,
            "TELEHUB_BROKER_URL": private_redis.url,
            "TELEHUB_EMBEDDED_WORKER": "true",
            "TELEHUB_DICOM_PROCESSES": "1",
            "TELEHUB_OUTBOX_REDELIVER_SECONDS": "3",
        },
    )
    db = Database(postgres_url)
    try:
        token = hub.api.login("clinic")
        first = study(tmp_path / "first")
        assert set(c_store(hub.dicom_port, "CLINIC1", first).values()) == {0x0000}
        uid = lambda paths: str(pydicom.dcmread(paths[0]).StudyInstanceUID)  # noqa: E731
        poll("the first case routed", lambda: routed_once(db, {uid(first)}))

        private_redis.stop()
        during = study(tmp_path / "during")
        assert set(c_store(hub.dicom_port, "CLINIC1", during).values()) == {0x0000}
        web = study(tmp_path / "web")
        assert stow(hub, token, web).status == 200
        # Stored and complete, but not routed: the routing job waits in the outbox.
        with db.reader() as session:
            waiting = session.scalars(
                select(Case.status)
                .join(Study, Study.case_id == Case.id)
                .where(Study.study_uid.in_([uid(during), uid(web)]))
            ).all()
            pending = session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.done_at.is_(None), OutboxMessage.task == "telehub.route_case")
            )
        assert sorted(waiting) == ["complete", "complete"] and pending == 2
        assert not hub.api.get("/readyz").body["checks"]["broker"]["ok"]

        private_redis.start()  # same port, empty: whatever was queued before is gone too
        studies = {uid(first), uid(during), uid(web)}
        poll("routing caught up", lambda: routed_once(db, studies), 60)
        assert indexed(db) == Counter(sop(p) for p in first + during + web)
    finally:
        hub.proc.stop()
        db.dispose()


# ----- (c) the database restarts -------------------------------------------------------------
@dataclass
class PgCluster:
    """A private PostgreSQL cluster (initdb as the postgres user), on its own port."""

    bin: Path
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.folder / "data"),
                "-w",
                "-t",
                "60",
                *args,
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.ctl("-o", options, "-l", str(self.folder / "pg.log"), "start")


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    pg_bin = _pg_bin()
    if pg_bin is None or not shutil.which("runuser"):
        if IN_CI:
            pytest.fail("initdb (PostgreSQL server binaries) is not installed (CI=true)")
        pytest.skip("initdb (PostgreSQL server binaries) is not installed")
    folder = Path(tempfile.mkdtemp(prefix="telehub-pg-"))  # under /tmp: postgres can reach it
    shutil.chown(folder, "postgres", "postgres")
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(pg_bin / "initdb"),
            "-D",
            str(folder / "data"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    cluster = PgCluster(pg_bin, folder, free_port())
    cluster.start()
    try:
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.ctl("-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Modality:
    """Sends studies until told to stop, remembering each instance's last status."""

    hub: Hub
    folder: Path
    status: dict[Path, int | None] = field(default_factory=dict)
    go: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        try:
            while self.go.is_set():
                paths = study(self.folder / uuid.uuid4().hex[:8], 4)
                self.status.update(c_store(self.hub.dicom_port, "CLINIC1", paths))
        except BaseException as exc:
            self.errors.append(repr(exc))


def test_database_restarted_mid_ingest(tmp_path: Path, pg_cluster: PgCluster) -> None:
    """PostgreSQL restarts under a running ingest: what was acknowledged is indexed exactly
    once, what was not got a failure status (never silence), the hub is ready again by itself,
    and once the refused instances are sent again every case is routed exactly once."""
    hub = start_hub(
        tmp_path,
        {
            "TELEHUB_DATABASE_URL": pg_cluster.url,
            "TELEHUB_EMBEDDED_WORKER": "true",
            "TELEHUB_DICOM_PROCESSES": "1",
            "TELEHUB_OUTBOX_REDELIVER_SECONDS": "3",
            # A study whose completion failed with the database gets completed by the sweep.
            "TELEHUB_ABANDONED_STUDY_SECONDS": "3",
        },
    )
    modality = Modality(hub, tmp_path / "sent")
    sender = threading.Thread(target=modality.run)
    db = Database(pg_cluster.url)
    try:
        token = hub.api.login("clinic")
        modality.go.set()
        sender.start()
        poll("some instances acknowledged", lambda: 0x0000 in modality.status.values())
        # A study stored in full whose transfer ends while the database is going down: the
        # hub cannot mark it complete then; the recovery sweep must, or it is never routed.
        cut_off = c_store(
            hub.dicom_port,
            "CLINIC1",
            study(tmp_path / "cut-off"),
            before_release=lambda: pg_cluster.ctl("-m", "fast", "stop"),
        )
        assert set(cut_off.values()) == {0x0000}
        # Down: a study sent now is refused instance by instance, with a failure status.
        down = c_store(hub.dicom_port, "CLINIC1", study(tmp_path / "down"))
        assert set(down.values()) == {0x0110}, down  # processing failure: not indexed
        web = study(tmp_path / "web-down")
        refused_web = stow(hub, token, web)  # refused as a whole, and why: no false success
        assert refused_web.status == 503, refused_web
        assert refused_web.body["error"] == "database_unavailable"
        ready = hub.api.get("/readyz")
        assert ready.status == 503 and not ready.body["checks"]["database"]["ok"]
        pg_cluster.start()
        poll("ready again", lambda: hub.api.get("/readyz").status == 200, 30)
        acked_after = sum(1 for c in modality.status.values() if c == 0x0000) + 4
        poll(
            "ingest going on",
            lambda: sum(1 for c in modality.status.values() if c == 0) > acked_after,
        )
        modality.go.clear()
        sender.join(60)
        assert not modality.errors, modality.errors
        status = {**modality.status, **cut_off, **down}

        # Acknowledged: indexed exactly once. Refused: a failure status, not silence.
        acked = {sop(p) for p, code in status.items() if code == 0x0000}
        refused = [p for p, code in status.items() if code != 0x0000]
        stored = indexed(db)
        assert all(stored[uid] == 1 for uid in acked), acked - set(stored)
        assert max(stored.values()) == 1

        assert not set(map(sop, web)) & set(stored)
        # A modality sends what was refused again; then nothing is missing or doubled.
        for path in refused:
            assert c_store(hub.dicom_port, "CLINIC1", [path])[path] == 0x0000
        assert stow(hub, token, web).status == 200
        status.update(dict.fromkeys(web, 0x0000))
        assert indexed(db) == Counter(sop(p) for p in status)
        studies = {
            str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in status
        }
        poll("every case routed once", lambda: routed_once(db, studies), 60)
    finally:
        modality.go.clear()
        if sender.is_alive():
            sender.join(60)
        hub.proc.stop()
        db.dispose()


# ----- the sweeps a crash needs --------------------------------------------------------------
def test_orphan_sweep_removes_only_old_unindexed_objects(db: Database, tmp_path: Path) -> None:
    """An object without an index row (a crash between object write and index commit) goes
    once older than the grace; a young one may be an ingest in flight, an indexed one is data."""
    from dicom.meta import read_instance_meta
    from telehub import ingest
    from telehub.db.models import Facility
    from telehub.recovery import sweep_orphans, sweep_spool_temp
    from telehub.store import FilesystemStore, instance_key

    store = FilesystemStore(tmp_path / "objects")
    kept = fresh_copy("CT_small.dcm", tmp_path / "in")
    ds = pydicom.dcmread(kept)
    with db.reader() as session:
        t1 = session.scalar(select(Facility.id).where(Facility.code == "T1"))
    meta = read_instance_meta(kept, ds.SOPClassUID, ds.SOPInstanceUID)
    ingest.store_instance(db, store, t1, meta, kept, "dimse:CLINIC1")
    old = instance_key("1.2.3", "1.2.3.4", "1.2.3.4.5")
    young = instance_key("1.2.3", "1.2.3.4", "1.2.3.4.6")
    store.put_bytes(old, b"orphan")
    store.put_bytes(young, b"in flight")
    hour_ago = time.time() - 3600
    os.utime(store.path_of(old), (hour_ago, hour_ago))
    ingest_key = instance_key(meta.study_uid, meta.series_uid, meta.sop_uid)
    os.utime(store.path_of(ingest_key), (hour_ago, hour_ago))

    swept = sweep_orphans(db, store, grace_seconds=600)
    assert (swept.checked, swept.orphans, swept.removed) == (3, 1, 1)
    assert not store.exists(old) and store.exists(young) and store.exists(ingest_key)
    assert sweep_orphans(db, store, grace_seconds=600).orphans == 0  # nothing twice

    spool = tmp_path / "spool"
    (spool / "incoming").mkdir(parents=True)
    stale = spool / "incoming" / "tmpabc"
    stale.write_bytes(b"half an association")
    os.utime(stale, (hour_ago, hour_ago))
    (spool / "stow-fresh").mkdir()
    assert sweep_spool_temp(spool, grace_seconds=600) == 1
    assert not stale.exists() and (spool / "stow-fresh").exists()


def test_abandoned_study_is_completed_once(db: Database, tmp_path: Path) -> None:
    """A study whose transfer end never came (its receiver died) is completed once it has been
    quiet, with one routing job; a later sweep finds nothing more to do."""
    from dicom.meta import read_instance_meta
    from telehub import ingest
    from telehub.db.models import Facility
    from telehub.recovery import complete_abandoned_studies
    from telehub.store import FilesystemStore

    path = fresh_copy("CT_small.dcm", tmp_path / "in")
    ds = pydicom.dcmread(path)
    with db.reader() as session:
        t1 = session.scalar(select(Facility.id).where(Facility.code == "T1"))
    meta = read_instance_meta(path, ds.SOPClassUID, ds.SOPInstanceUID)
    store = FilesystemStore(tmp_path / "objects")
    outcome = ingest.store_instance(db, store, t1, meta, path, "dimse:CLINIC1")
    assert complete_abandoned_studies(db, quiet_seconds=600) == []  # not quiet long enough
    time.sleep(0.05)
    assert complete_abandoned_studies(db, quiet_seconds=0.01) == [outcome.case_id]
    assert complete_abandoned_studies(db, quiet_seconds=0.01) == []
    with db.reader() as session:
        assert session.get_one(Case, outcome.case_id).status == "complete"
        routing = session.scalars(
            select(OutboxMessage.args).where(OutboxMessage.task == "telehub.route_case")
        ).all()
    assert routing == [{"case_id": outcome.case_id}]
    # The study grows by a late instance: a sweep leaves it alone until it has been quiet too.
    later = fresh_copy("CT_small.dcm", tmp_path / "later", study_uid=ds.StudyInstanceUID)
    late = pydicom.dcmread(later)
    ingest.store_instance(
        db,
        store,
        t1,
        read_instance_meta(later, late.SOPClassUID, late.SOPInstanceUID),
        later,
        "dimse:CLINIC1",
    )
    complete_abandoned_studies(db, quiet_seconds=600)
    with db.reader() as session:
        study = session.scalar(select(Study).where(Study.study_uid == ds.StudyInstanceUID))
        assert (study.instance_count, study.completed_instance_count) == (2, 1)
    time.sleep(0.05)
    complete_abandoned_studies(db, quiet_seconds=0.01)
    with db.reader() as session:
        study = session.scalar(select(Study).where(Study.study_uid == ds.StudyInstanceUID))
        assert (study.instance_count, study.completed_instance_count) == (2, 2)
