"""Scale-out on loopback (issue 8): two hub processes and two Celery workers sharing one
PostgreSQL database, one Redis broker and one S3 bucket. Clinics send to both hubs at once, over
C-STORE and STOW-RS, and one worker is killed with SIGKILL in the middle: every instance is
stored once (database and bucket, byte for byte), every case is routed exactly once, no outbox
row is left undone, and the surviving worker finishes what the dead one held."""

from __future__ import annotations

import contextlib
import hashlib
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from kombu import Connection
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicom.send import send_paths
from telehub.db import Database
from telehub.db.models import Case, CaseEvent, Facility, Instance, OutboxMessage, Series, Study
from tests.helpers import Hub, Proc, S3Server, dataset_bytes, fresh_copy, poll, start_hub

#: Studies per (hub, clinic) over C-STORE, sent in two halves around the worker's death; and
#: studies per hub over STOW-RS. Three instances each.
DIMSE_STUDIES = 6
STOW_STUDIES = 2
INSTANCES = 3
#: Redis database of this test alone: the queue name is fixed ("telehub"), so a worker of
#: another test on the shared test database would take our tasks and mark rows of its own
#: database's outbox done.
REDIS_DB = 9
#: Settled cases: on a worklist, or already pushed to a reader by the assignment job.
SETTLED = {"routed", "claimed"}


def _own_redis(redis_url: str) -> str:
    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    # Drop what an interrupted run may have left (the queue may not exist yet).
    with Connection(url, connect_timeout=3) as conn, contextlib.suppress(Exception):
        conn.default_channel.queue_purge("telehub")
    return url


@dataclass
class Cluster:
    hubs: list[Hub]
    workers: list[Proc]
    bucket: str
    db: Database


@pytest.fixture
def cluster(
    tmp_path: Path, postgres_url: str, redis_url: str, s3_server: S3Server
) -> Iterator[Cluster]:
    bucket = f"scale-{uuid.uuid4().hex[:12]}"
    env = {
        "TELEHUB_DATABASE_URL": postgres_url,
        "TELEHUB_STORAGE_URL": s3_server.url(bucket),
        "TELEHUB_BROKER_URL": _own_redis(redis_url),
        "TELEHUB_EMBEDDED_WORKER": "false",
        "TELEHUB_DICOM_PROCESSES": "2",
        # A task held by the killed worker is published again this soon (the default is 60 s).
        "TELEHUB_OUTBOX_REDELIVER_SECONDS": "3",
    }
    hubs: list[Hub] = []
    workers: list[Proc] = []
    db = Database(postgres_url)
    try:
        # One after the other: the first migrates and seeds, as a deployment's first start does.
        for name in ("hub-a", "hub-b"):
            hubs.append(start_hub(tmp_path, env, name))
        for name in ("worker-a", "worker-b"):
            workers.append(
                Proc(
                    ["worker", "--pool", "threads", "--concurrency", "2"],
                    hubs[0].env | {"TELEHUB_DATA": str(tmp_path / f"{name}-data")},
                    tmp_path / f"{name}.log",
                ).start()
            )
        yield Cluster(hubs, workers, bucket, db)
    finally:
        for proc in [*workers, *(hub.proc for hub in hubs)]:
            proc.stop()
        db.dispose()


# ----- sending -------------------------------------------------------------------------------
@dataclass
class Sent:
    """What the clinics sent and what the hubs acknowledged."""

    files: dict[str, Path] = field(default_factory=dict)  # SOP Instance UID -> file
    origin: dict[str, str] = field(default_factory=dict)  # Study Instance UID -> facility code
    acknowledged: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _study(folder: Path, sent: Sent, facility: str) -> list[Path]:
    study_uid = generate_uid()
    patient = f"SCALE-{uuid.uuid4().hex[:8]}"
    paths = [
        fresh_copy("CT_small.dcm", folder, study_uid=study_uid, PatientID=patient)
        for _ in range(INSTANCES)
    ]
    with sent.lock:
        sent.origin[study_uid] = facility
        for path in paths:
            sent.files[pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID] = path
    return paths


def _dimse_sender(
    hub: Hub,
    aet: str,
    facility: str,
    folder: Path,
    sent: Sent,
    halfway: threading.Event,
    go_on: threading.Event,
) -> None:
    """One clinic's modality: a study per association, half before the kill, half after."""
    try:
        for i in range(DIMSE_STUDIES):
            if i == DIMSE_STUDIES // 2:
                halfway.set()
                assert go_on.wait(60), "the worker was never killed"
            paths = _study(folder / f"{aet}-{i}", sent, facility)
            result = send_paths(paths, "127.0.0.1", hub.dicom_port, aet)
            with sent.lock:
                sent.acknowledged[f"dimse:{aet}"] += result.sent
                sent.errors += [f"{r.path}: {r.reason}" for r in result.refused]
    except BaseException as exc:  # reported by the test, not lost in a thread
        with sent.lock:
            sent.errors.append(f"{aet} -> {hub.dicom_port}: {exc!r}")
        halfway.set()


def _stow_sender(hub: Hub, user: str, facility: str, folder: Path, sent: Sent) -> None:
    """A clinic's web uploader: each study as one multipart/related STOW-RS request."""
    try:
        token = hub.api.login(user)
        for i in range(STOW_STUDIES):
            paths = _study(folder / f"stow-{user}-{i}", sent, facility)
            boundary = uuid.uuid4().hex
            body = (
                b"".join(
                    f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    + p.read_bytes()
                    for p in paths
                )
                + f"\r\n--{boundary}--\r\n".encode()
            )
            resp = hub.api.request(
                "POST",
                "/dicomweb/studies",
                token,
                raw=body,
                content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
            )
            with sent.lock:
                if resp.status == 200:
                    sent.acknowledged[f"stow:{user}"] += len(paths)
                else:
                    sent.errors.append(f"STOW to {hub.http_port}: {resp.status} {resp.body!r}")
    except BaseException as exc:
        with sent.lock:
            sent.errors.append(f"STOW {user} -> {hub.http_port}: {exc!r}")


# ----- waiting and reading back --------------------------------------------------------------
def _settled(db: Database, expected: int) -> bool:
    with db.reader() as session:
        cases = session.scalar(select(func.count()).select_from(Case)) or 0
        unsettled = session.scalar(
            select(func.count()).select_from(Case).where(Case.status.not_in(SETTLED))
        )
        pending = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.done_at.is_(None))
        )
    return cases == expected and unsettled == 0 and pending == 0


_TASK = re.compile(r"Task (telehub\.\w+)\[([0-9a-f-]+)\] (received|succeeded)")


def _tasks(log: str, state: str) -> set[str]:
    """Ids of the tasks a worker's log shows as ``received`` or ``succeeded``."""
    return {m[2] for m in _TASK.finditer(log) if m[3] == state}


def _worker_tasks(log: str) -> int:
    return len(_tasks(log, "succeeded"))


def _busy(worker: Proc) -> bool:
    """The worker has finished some tasks and holds at least one it has not finished."""
    log = worker.output()
    done = _tasks(log, "succeeded")
    return len(done) >= 2 and bool(_tasks(log, "received") - done)


def test_two_hubs_two_workers_every_case_routed_once(
    cluster: Cluster, s3_server: S3Server, tmp_path: Path
) -> None:
    hub_a, hub_b = cluster.hubs
    doomed, survivor = cluster.workers
    sent = Sent()
    halfway = [threading.Event() for _ in range(4)]
    killed = threading.Event()
    dimse = [
        (hub_a, "CLINIC1", "T1"),
        (hub_a, "CLINIC2", "T2"),
        (hub_b, "CLINIC1", "T1"),
        (hub_b, "CLINIC2", "T2"),
    ]
    threads = [
        threading.Thread(
            target=_dimse_sender,
            args=(hub, aet, fac, tmp_path / f"send-{i}", sent, halfway[i], killed),
        )
        for i, (hub, aet, fac) in enumerate(dimse)
    ] + [
        threading.Thread(target=_stow_sender, args=(hub, user, fac, tmp_path / f"stow-{i}", sent))
        for i, (hub, user, fac) in enumerate([(hub_a, "clinic", "T1"), (hub_b, "clinic2", "T2")])
    ]
    for thread in threads:
        thread.start()
    try:
        # Both hubs are taking studies and the doomed worker has done some of the routing:
        # now it dies, with no chance to acknowledge or hand back what it holds.
        for event in halfway:
            assert event.wait(60)
        poll("the first worker to do work", lambda: _worker_tasks(doomed.output()) > 0)
        # Best moment: in the middle of a task, so the kill takes work with it (the first half
        # of the studies keeps tasks coming for a while; if none is caught, kill anyway).
        deadline = time.monotonic() + 15
        while not _busy(doomed) and time.monotonic() < deadline:
            time.sleep(0.01)
        doomed.stop(signal.SIGKILL)
        held = _tasks(doomed.output(), "received") - _tasks(doomed.output(), "succeeded")
        assert doomed.popen is not None and doomed.popen.returncode == -signal.SIGKILL
        survivor_log_at_kill = len(survivor.output())
    finally:
        killed.set()
        for thread in threads:
            thread.join(120)
    assert not sent.errors, sent.errors

    # Every acknowledged instance was acknowledged once, by whichever hub took it.
    expected_instances = len(dimse) * DIMSE_STUDIES * INSTANCES + 2 * STOW_STUDIES * INSTANCES
    assert sum(sent.acknowledged.values()) == expected_instances == len(sent.files)
    studies = len(sent.origin)

    # The surviving worker finishes everything: all cases settled, the outbox empty.
    poll("every case routed and the outbox drained", lambda: _settled(cluster.db, studies), 45)

    with cluster.db.reader() as session:
        rows = session.execute(
            select(Instance.sop_uid, Instance.object_key, Instance.sha256, Study.study_uid)
            .join(Series, Series.id == Instance.series_id)
            .join(Study, Study.id == Series.study_id)
        ).all()
        cases = session.execute(
            select(Case.id, Case.status, Case.centre_id, Facility.code, Study.study_uid)
            .join(Study, Study.case_id == Case.id)
            .join(Facility, Facility.id == Case.origin_facility_id)
        ).all()
        routed = Counter(
            session.scalars(select(CaseEvent.case_id).where(CaseEvent.kind == "routed"))
        )

    # Each sent instance is in the database exactly once, in the study it was sent in.
    sop_uids = [r.sop_uid for r in rows]
    assert Counter(sop_uids) == Counter(list(sent.files))
    for row in rows:
        assert (
            pydicom.dcmread(sent.files[row.sop_uid], stop_before_pixels=True).StudyInstanceUID
            == row.study_uid
        )

    # One case per study, from the right facility, on a worklist, routed exactly once.
    assert len(cases) == studies == len({c.id for c in cases})
    assert {c.study_uid: c.code for c in cases} == sent.origin
    for case in cases:
        assert case.status in SETTLED and case.centre_id is not None, case
        assert routed[case.id] == 1, (case, routed[case.id])
    assert set(routed) == {c.id for c in cases}

    # The spool movers of both hubs drain into the one bucket: every object is there once,
    # with the recorded hash, holding the data set that was sent.
    client = s3_server.client()
    keys = {r.object_key: r for r in rows}

    def in_bucket() -> list[str]:
        found = [o.object_name for o in client.list_objects(cluster.bucket, "dicom/", True)]
        return found if sorted(found) == sorted(keys) else []

    poll("every instance in the S3 bucket", in_bucket)
    for key, row in keys.items():
        response = client.get_object(cluster.bucket, key)
        try:
            data = response.read()
        finally:
            response.close()
            response.release_conn()
        assert hashlib.sha256(data).hexdigest() == row.sha256, key
        assert dataset_bytes(data) == dataset_bytes(sent.files[row.sop_uid].read_bytes()), key
    for hub in cluster.hubs:
        assert not [p for p in (hub.data / "spool").rglob("*.dcm") if p.is_file()], hub.data

    # Both workers did work; the survivor went on after the other one died.
    assert _worker_tasks(doomed.output()) > 0
    assert _worker_tasks(survivor.output()[survivor_log_at_kill:]) > 0
    assert "telehub.route_case" in survivor.output()
    # What the doomed worker held unfinished was done by the survivor: each such outbox task
    # has its row done (checked above) and went through the survivor's hands too.
    print(f"killed worker held {len(held)} unfinished task(s): {sorted(held)}")
