"""kill -9 during a large ingest (issue 8, faults): nothing acknowledged is lost or doubled.

Run: nice -n 10 python3 bench/faults/kill_ingest.py [--rounds 50] [--seed N]

Topology on loopback, all of it private to this run: a fresh database on the machine's
PostgreSQL (dropped at the end), Redis database 11, a moto S3 server started here, one hub
(``telehub serve``, one DICOM receiving process) and one worker (``telehub worker --beat``).
Senders push studies of 4-16 instances for the whole run: two modalities per clinic over C-STORE
(pynetdicom, one association per attempt), one web uploader per clinic over STOW-RS: thousands
of ~40 kB CT slices, and every 25th instance a 2-4.5 MB one. A sender remembers exactly what
got a success status (C-STORE 0x0000, STOW-RS 200) and, as a modality does, sends what did not
again later (to the restarted hub).

A killer sleeps a random while (seeded RNG, seed printed), then SIGKILLs the hub's or the
worker's whole process group (the hub's receiving child with it) and restarts it, ``--rounds``
times. At the end, after the senders finish and the worker drains: every acknowledged instance
is in the index once and its object in the bucket is byte-identical to what was sent (data set
bytes, and the SHA-256 the index recorded); every case is routed exactly once; the outbox is
empty; objects with no index row and spool temporaries are counted, ``telehub recover`` sweeps
them, and they are counted again. Exit status 1 if anything was lost or doubled.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pydicom  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import CTImageStorage  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from dicom.net import NODELAY_HANDLERS  # noqa: E402
from telehub.db import Database  # noqa: E402
from telehub.db.models import Case, CaseEvent, Instance, OutboxMessage, Series, Study  # noqa: E402
from telehub.recovery import spool_temp_entries  # noqa: E402
from tests.helpers import (  # noqa: E402
    PG_ADMIN_URL,
    Api,
    S3Server,
    dataset_bytes,
    dicom_file,
    free_port,
    wait_port,
)

REDIS_DB = 11  # this bench's own: the queue name is fixed, a stranger's worker would eat ours
SETTLED = {"routed", "claimed"}
LARGE_EVERY = 25
#: Two modalities per clinic over C-STORE, one web uploader per clinic over STOW-RS.
SENDERS = [("dimse", "CLINIC1"), ("dimse", "CLINIC2")] * 2 + [
    ("stow", "clinic"),
    ("stow", "clinic2"),
]


# ----- processes -----------------------------------------------------------------------------
@dataclass
class Node:
    """A telehub process in its own session, so kill -9 takes its children with it."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "telehub", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.log_path.parent,
            start_new_session=True,
        )
        log.close()
        self.starts += 1

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        # Children that outlive the leader (none should) die with the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)


def wait_hub(api: Api, dicom_port: int, node: Node, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.popen and node.popen.poll() is not None:
            raise RuntimeError(f"hub exited: see {node.log_path}")
        with contextlib.suppress(OSError):
            if api.get("/healthz").status == 200:
                wait_port(dicom_port)
                return
        time.sleep(0.1)
    raise TimeoutError("hub did not come back")


# ----- data ----------------------------------------------------------------------------------
class Maker:
    """Fresh CT instances as Part 10 files: CT_small (~40 kB) or a 1024-1536 matrix one."""

    def __init__(self, folder: Path, rng: random.Random) -> None:
        self.folder = folder
        self.rng = rng
        self.template = pydicom.dcmread(dicom_file("CT_small.dcm"))
        self.count = 0
        self.lock = threading.Lock()

    def study(self, n: int, patient: str) -> list[Path]:
        study_uid, series_uid = generate_uid(), generate_uid()
        paths = []
        for i in range(n):
            with self.lock:
                self.count += 1
                large = self.count % LARGE_EVERY == 0
                size = self.rng.choice((1024, 1536))
            ds = copy.deepcopy(self.template)  # a shallow copy shares its elements
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.PatientID, ds.InstanceNumber = patient, i + 1
            if large:
                ds.Rows = ds.Columns = size
                ds.PixelData = os.urandom(size * size * 2)
            path = self.folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        return paths


@dataclass
class Ledger:
    """What was sent and what got a success status, per SOP Instance UID."""

    files: dict[str, Path] = field(default_factory=dict)
    study_of: dict[str, str] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    attempts: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, paths: list[Path]) -> list[str]:
        uids = []
        with self.lock:
            for path in paths:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                self.files[ds.SOPInstanceUID] = path
                self.study_of[ds.SOPInstanceUID] = ds.StudyInstanceUID
                uids.append(ds.SOPInstanceUID)
        return uids

    def ack(self, uids: list[str], how: str) -> None:
        with self.lock:
            self.acked.update(uids)
            self.counts[how] += len(uids)

    def note(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n


# ----- senders -------------------------------------------------------------------------------
def dimse_attempt(aet: str, port: int, pending: list[str], ledger: Ledger) -> list[str]:
    """One association carrying ``pending``; returns what is still not acknowledged."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="TELEHUB", evt_handlers=NODELAY_HANDLERS)
    if not assoc.is_established:
        ledger.note("dimse association failed")
        return pending
    left = list(pending)
    try:
        for uid in pending:
            try:
                status = assoc.send_c_store(ledger.files[uid])
            except Exception:
                ledger.note("dimse exception")
                break
            code = getattr(status, "Status", None)
            if code == 0x0000:
                ledger.ack([uid], f"dimse:{aet} 0x0000")
                left.remove(uid)
            elif code is None:
                ledger.note("dimse no answer (connection lost)")
                break
            else:
                ledger.note(f"dimse status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return left


def stow_attempt(api: Api, token: str, pending: list[str], ledger: Ledger) -> list[str]:
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + ledger.files[uid].read_bytes()
            for uid in pending
        )
        + f"\r\n--{boundary}--\r\n".encode()
    )
    try:
        resp = api.request(
            "POST",
            "/dicomweb/studies",
            token,
            raw=body,
            content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
        )
    except Exception:
        ledger.note("stow exception")
        return pending
    if resp.status == 200:
        ledger.ack(pending, "stow 200")
        return []
    ledger.note(f"stow status {resp.status}")
    return pending


def sender(
    kind: str,
    name: str,
    hub: dict,
    maker: Maker,
    ledger: Ledger,
    rng: random.Random,
    more: threading.Event,
    give_up_at: list[float],
) -> None:
    """Send studies while ``more`` is set; retry what was not acknowledged until done."""
    token = ""
    while more.is_set():
        patient = f"FAULT-{uuid.uuid4().hex[:8]}"
        pending = ledger.add(maker.study(rng.randint(4, 16), patient))
        while pending and time.monotonic() < give_up_at[0]:
            with ledger.lock:
                ledger.attempts.update(pending)
            if kind == "dimse":
                pending = dimse_attempt(name, hub["dicom_port"], pending, ledger)
            else:
                api = Api(f"http://127.0.0.1:{hub['http_port']}")
                try:
                    token = token or api.login(name)
                except Exception:
                    token = ""
                    ledger.note("stow login failed")
                    time.sleep(0.5)
                    continue
                pending = stow_attempt(api, token, pending, ledger)
            if pending:
                time.sleep(0.5)
        if pending:
            ledger.note("gave up", len(pending))


# ----- reading back --------------------------------------------------------------------------
def poll(what: str, check, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def settled(db: Database) -> bool:
    with db.reader() as session:
        unsettled = session.scalar(
            select(func.count()).select_from(Case).where(Case.status.not_in(SETTLED))
        )
        pending = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.done_at.is_(None))
        )
    return unsettled == 0 and pending == 0


def spooled(data_dirs: list[Path]) -> int:
    return sum(
        1 for d in data_dirs for p in (d / "spool" / "objects").rglob("*.dcm") if p.is_file()
    )


def orphans(db: Database, s3: S3Server, bucket: str, data_dirs: list[Path]) -> dict[str, int]:
    with db.reader() as session:
        indexed = set(session.scalars(select(Instance.object_key)))
    keys = [
        o.object_name
        for o in s3.client().list_objects(bucket, "dicom/", recursive=True)
        if o.object_name.endswith(".dcm")
    ]
    spool_keys = [
        p.relative_to(d / "spool" / "objects").as_posix()
        for d in data_dirs
        for p in (d / "spool" / "objects").rglob("*.dcm")
        if p.is_file() and ".tmp" not in p.parts
    ]
    return {
        "s3_unindexed": sum(1 for k in keys if k not in indexed),
        "spool_unindexed": sum(1 for k in spool_keys if k not in indexed),
        "spool_temp": sum(len(spool_temp_entries(d / "spool")) for d in data_dirs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--min-gap", type=float, default=1.0, help="seconds between kills, min")
    parser.add_argument("--max-gap", type=float, default=5.0, help="seconds between kills, max")
    parser.add_argument("--keep", action="store_true", help="keep the database and files")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"seed {seed} (repeat with --seed {seed})", flush=True)
    rng = random.Random(seed)
    started = time.monotonic()

    tmp = Path(tempfile.mkdtemp(prefix="telehub-faults-"))
    print(f"work folder {tmp}", flush=True)
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per S3 request

    s3_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    moto.start()
    wait_port(s3_port)
    s3 = S3Server(f"127.0.0.1:{s3_port}")
    bucket = f"faults-{uuid.uuid4().hex[:8]}"

    db_name = f"telehub_faults_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + db_name
    broker = f"redis://127.0.0.1:6379/{REDIS_DB}"
    import redis

    redis.Redis.from_url(broker).flushdb()

    hub_ports = {"http_port": free_port(), "dicom_port": free_port()}
    base = {
        **os.environ,
        "TELEHUB_DATABASE_URL": db_url,
        "TELEHUB_STORAGE_URL": s3.url(bucket),
        "TELEHUB_BROKER_URL": broker,
        "TELEHUB_EMBEDDED_WORKER": "false",
        "TELEHUB_DICOM_PROCESSES": "1",
        "TELEHUB_DICOM_HOST": "127.0.0.1",
        "TELEHUB_OUTBOX_REDELIVER_SECONDS": "3",
        # The beat's recovery sweep completes a study whose transfer a kill cut off.
        "TELEHUB_ABANDONED_STUDY_SECONDS": "5",
    }
    hub_env = base | {
        "TELEHUB_DATA": str(tmp / "hub-data"),
        "TELEHUB_HTTP_PORT": str(hub_ports["http_port"]),
        "TELEHUB_DICOM_PORT": str(hub_ports["dicom_port"]),
    }
    worker_env = base | {"TELEHUB_DATA": str(tmp / "worker-data")}
    data_dirs = [tmp / "hub-data", tmp / "worker-data"]
    hub = Node("hub", ["serve", "--demo"], hub_env, tmp / "hub.log")
    worker = Node(
        "worker",
        ["worker", "--pool", "threads", "--concurrency", "2", "--beat"],
        worker_env,
        tmp / "worker.log",
    )
    api = Api(f"http://127.0.0.1:{hub_ports['http_port']}")
    db = Database(db_url)
    ledger = Ledger()
    (tmp / "sent").mkdir()
    maker = Maker(tmp / "sent", random.Random(rng.random()))
    more = threading.Event()
    give_up_at = [float("inf")]
    kills: Counter[str] = Counter()
    downtime: dict[str, list[float]] = {"hub": [], "worker": []}
    summary: dict = {}
    ok = False
    try:
        hub.start()
        wait_hub(api, hub_ports["dicom_port"], hub)
        worker.start()
        more.set()
        senders = [
            threading.Thread(
                target=sender,
                args=(kind, name, hub_ports, maker, ledger, random.Random(rng.random()), more),
                kwargs={"give_up_at": give_up_at},
                daemon=True,
            )
            for kind, name in SENDERS
        ]
        for thread in senders:
            thread.start()
        for round_no in range(1, args.rounds + 1):
            time.sleep(rng.uniform(args.min_gap, args.max_gap))
            victim = hub if rng.random() < 0.5 else worker
            t0 = time.monotonic()
            victim.kill()
            kills[victim.name] += 1
            victim.start()
            if victim is hub:
                wait_hub(api, hub_ports["dicom_port"], hub)
            downtime[victim.name].append(time.monotonic() - t0)
            print(
                f"round {round_no:3d}: kill -9 {victim.name:6s} "
                f"back in {downtime[victim.name][-1]:5.1f} s; "
                f"acknowledged so far {len(ledger.acked)}",
                flush=True,
            )
        more.clear()
        give_up_at[0] = time.monotonic() + 180
        for thread in senders:
            thread.join(200)
        ingest_seconds = time.monotonic() - started
        print(f"senders done: {dict(ledger.counts)}", flush=True)

        # Drain: every case settled, the outbox empty, both spools moved to the bucket.
        poll("cases settled and the outbox empty", lambda: settled(db), 300)
        poll("the spools moved to the bucket", lambda: spooled(data_dirs) == 0, 120)
        before = orphans(db, s3, bucket, data_dirs)
        swept = {}
        for node in (hub, worker):
            out = subprocess.run(
                [sys.executable, "-m", "telehub", "recover", "--grace-seconds", "0"],
                env=node.env,
                capture_output=True,
                text=True,
                check=True,
            )
            swept[node.name] = json.loads(out.stdout.strip().splitlines()[-1])
        after = orphans(db, s3, bucket, data_dirs)
        abandoned = sum(
            int(line.split("completed ")[1].split()[0])
            for line in worker.log_path.read_text(errors="replace").splitlines()
            if "abandoned stud" in line
        )
        startup_swept = sum(
            int(line.split("removed ")[1].split()[0])
            for line in hub.log_path.read_text(errors="replace").splitlines()
            if "stale temporary file(s)" in line
        )

        # Verify every acknowledged instance: indexed once, in its study, bytes as sent.
        with db.reader() as session:
            rows = session.execute(
                select(Instance.sop_uid, Instance.object_key, Instance.sha256, Study.study_uid)
                .join(Series, Series.id == Instance.series_id)
                .join(Study, Study.id == Series.study_id)
            ).all()
            case_rows = session.execute(
                select(Case.id, Case.status, Study.study_uid).join(Study, Study.case_id == Case.id)
            ).all()
            routed = Counter(
                session.scalars(select(CaseEvent.case_id).where(CaseEvent.kind == "routed"))
            )
            outbox_left = session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.done_at.is_(None))
            )
        per_sop = Counter(r.sop_uid for r in rows)
        by_sop = {r.sop_uid: r for r in rows}
        client = s3.client()
        lost, corrupt, verified = [], [], 0
        for uid in sorted(ledger.acked):
            row = by_sop.get(uid)
            if row is None or row.study_uid != ledger.study_of[uid]:
                lost.append(uid)
                continue
            try:
                response = client.get_object(bucket, row.object_key)
                data = response.read()
                response.close()
                response.release_conn()
            except Exception:
                lost.append(uid)
                continue
            sent = ledger.files[uid].read_bytes()
            if hashlib.sha256(data).hexdigest() != row.sha256 or dataset_bytes(
                data
            ) != dataset_bytes(sent):
                corrupt.append(uid)
            else:
                verified += 1
        doubled_instances = sum(1 for n in per_sop.values() if n > 1)
        unknown = [r.sop_uid for r in rows if r.sop_uid not in ledger.files]
        cases_per_study = Counter(c.study_uid for c in case_rows)
        case_ids = {c.id for c in case_rows}
        doubled_cases = sum(1 for n in cases_per_study.values() if n > 1)
        routed_twice = sum(1 for cid in case_ids if routed[cid] > 1)
        not_routed = sum(1 for cid in case_ids if routed[cid] == 0)
        unsettled = sum(1 for c in case_rows if c.status not in SETTLED)
        stored_unacked = sum(1 for uid in per_sop if uid in ledger.files) - len(
            ledger.acked & set(per_sop)
        )
        summary = {
            "seed": seed,
            "rounds": args.rounds,
            "kills_hub": kills["hub"],
            "kills_worker": kills["worker"],
            "hub_back_seconds_median": _median(downtime["hub"]),
            "hub_back_seconds_max": max(downtime["hub"], default=0.0),
            "abandoned_studies_completed": abandoned,
            "instances_sent": len(ledger.files),
            "instances_acknowledged": len(ledger.acked),
            "instances_verified": verified,
            "acknowledged_after_resend": sum(1 for uid in ledger.acked if ledger.attempts[uid] > 1),
            "stored_not_acknowledged": stored_unacked,
            "lost": len(lost),
            "corrupt": len(corrupt),
            "doubled_instances": doubled_instances,
            "unknown_instances": len(unknown),
            "studies": len(cases_per_study),
            "cases": len(case_ids),
            "doubled_cases": doubled_cases,
            "cases_routed_twice": routed_twice,
            "cases_not_routed": not_routed,
            "cases_unsettled": unsettled,
            "outbox_left": outbox_left,
            "orphans_before": before,
            "hub_startup_swept_temp": startup_swept,
            "recover": swept,
            "orphans_after": after,
            "sender_counts": dict(ledger.counts),
            "ingest_seconds": round(ingest_seconds, 1),
            "total_seconds": round(time.monotonic() - started, 1),
        }
        ok = (
            not lost
            and not corrupt
            and doubled_instances == doubled_cases == routed_twice == not_routed == 0
            and unsettled == 0
            and outbox_left == 0
            and verified == len(ledger.acked)
            and not any(after.values())
        )
        print_table(summary, ok)
        if lost or corrupt:
            print(f"lost: {lost[:10]} corrupt: {corrupt[:10]}")
    finally:
        more.clear()
        give_up_at[0] = 0
        for node in (worker, hub):
            node.kill(signal.SIGTERM)
        db.dispose()
        if args.json and summary:
            args.json.write_text(json.dumps(summary, indent=2))
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                    ),
                    {"n": db_name},
                )
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}"'))
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        admin.dispose()
        moto.stop()
        with contextlib.suppress(Exception):
            redis.Redis.from_url(broker).flushdb()
    return 0 if ok else 1


def print_table(s: dict, ok: bool) -> None:
    out = io.StringIO()
    rows = [
        ("seed", s["seed"]),
        ("rounds", s["rounds"]),
        ("kill -9 hub / worker", f"{s['kills_hub']} / {s['kills_worker']}"),
        (
            "hub back up, median / max (s)",
            f"{s['hub_back_seconds_median']:.1f} / {s['hub_back_seconds_max']:.1f}",
        ),
        ("instances sent", s["instances_sent"]),
        ("acknowledged", s["instances_acknowledged"]),
        ("verified byte-identical", s["instances_verified"]),
        ("acknowledged after a resend", s["acknowledged_after_resend"]),
        ("stored, sender gave up", s["stored_not_acknowledged"]),
        ("lost / corrupt", f"{s['lost']} / {s['corrupt']}"),
        ("doubled instances / cases", f"{s['doubled_instances']} / {s['doubled_cases']}"),
        ("studies = cases", f"{s['studies']} = {s['cases']}"),
        ("routed twice / never", f"{s['cases_routed_twice']} / {s['cases_not_routed']}"),
        ("outbox left", s["outbox_left"]),
        ("abandoned studies completed", s["abandoned_studies_completed"]),
        ("temporaries swept at hub start", s["hub_startup_swept_temp"]),
        ("orphans before sweep", _orphans(s["orphans_before"])),
        ("orphans after sweep", _orphans(s["orphans_after"])),
        ("ingest / total (s)", f"{s['ingest_seconds']} / {s['total_seconds']}"),
        ("result", "PASS" if ok else "FAIL"),
    ]
    for name, value in rows:
        print(f"| {name:32s} | {value!s:>34s} |", file=out)
    print(out.getvalue(), end="")


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else 0.0


def _orphans(o: dict[str, int]) -> str:
    return f"S3 {o['s3_unindexed']}, spool {o['spool_unindexed']}, temp {o['spool_temp']}"


if __name__ == "__main__":
    sys.exit(main())
