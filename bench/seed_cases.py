"""Fill a fresh PostgreSQL database with a consortium of realistic size and a case history.

Run: python bench/seed_cases.py --cases 100000 [--name telehub_bench_x] [--keep]

Shape (all numbers are arguments of :func:`seed`; the defaults are the issue-5 benchmark):
- the demo consortium (``telehub.demo.seed_demo``) plus one more tertiary hospital, three more
  county hospitals and 38 more township clinics: 2 tertiary, 4 county, 40 township; every county
  and tertiary hospital has an imaging centre and an ECG centre; townships are read by their
  county, counties by their tertiary hospital; one clinic account per township;
- readers: 30 imaging + 12 ECG per county, 16 imaging + 8 ECG per tertiary hospital (216,
  password ``bench``, hashed with light argon2 parameters), beside the demo accounts;
- cases: half imaging (DX 40 %, CT 30 %, US 15 %, MR 10 %, CR 5 %; one study each), half ECG
  (one ECG record each, 4 % with a critical automated finding); priorities 5 % STAT, 20 %
  urgent, 75 % routine; 90 % sent by a township clinic, 10 % by a county hospital (read at the
  tertiary level), and 8 % of the township cases escalated to the tertiary hospital;
- status: ``open`` cases (default 5 % of all, at most 5,000) are on worklists now: 65 % ROUTED,
  20 % CLAIMED, 15 % PRELIMINARY, arrived recently (well inside their SLA, so an SLA sweep
  leaves them alone during a run); the rest are FINAL, spread over the past year;
- patients: about 0.6 per case (so many patients have priors), issuer = the origin's code;
- timeline: first_instance, study_complete, routed, then claimed, report_preliminary (some),
  report_final and delivered as far as each case got; a report row per preliminary/final.

Rows go in with PostgreSQL COPY (psycopg 3), ids given by us, sequences moved on afterwards, so
100,000 cases (about 1 M rows in all) take well under a minute.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from argon2 import PasswordHasher  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402

from telehub.db import Database  # noqa: E402
from telehub.db.migrate import upgrade  # noqa: E402
from telehub.db.models import (  # noqa: E402
    Facility,
    ReadingCentre,
    ReadingLink,
    Role,
    Service,
    Tier,
    User,
)
from telehub.demo import seed_demo  # noqa: E402

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BENCH_PASSWORD = "bench"
#: Bench accounts get light argon2 parameters (the hub verifies with those stored in the hash),
#: so logging 200 clients in takes seconds, not a minute of argon2 at the default cost; login
#: is not what the benchmark measures.
BENCH_HASHER = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)

PRIORITIES = (("stat", 0, 0.05), ("urgent", 1, 0.20), ("routine", 2, 0.75))
SLA_SECONDS = {"stat": 30 * 60, "urgent": 2 * 3600, "routine": 24 * 3600}
MODALITIES = (("DX", 0.40), ("CT", 0.30), ("US", 0.15), ("MR", 0.10), ("CR", 0.05))
BODY_PARTS = {
    "DX": ("CHEST", "CHEST", "CHEST", "LSPINE", "KNEE", "HAND"),
    "CR": ("CHEST", "PELVIS"),
    "CT": ("HEAD", "HEAD", "CHEST", "ABDOMEN", "LSPINE"),
    "MR": ("HEAD", "KNEE", "LSPINE", "CSPINE"),
    "US": ("ABDOMEN", "THYROID", "BREAST", "HEART"),
}
QUESTIONS = (
    "胸痛2小时 chest pain for 2 hours",
    "咳嗽发热 cough and fever",
    "头晕头痛 dizziness, headache",
    "外伤后疼痛 pain after a fall",
    "体检 routine check-up",
    "心悸 palpitations",
    "腹痛 abdominal pain",
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"
REPORT_TEXT = (
    "检查所见 Findings: 双肺纹理清晰，未见明确实质性病变。心影大小形态未见异常。\n"
    "诊断意见 Impression: 未见明显异常 no acute abnormality."
)
ECG_REPORT_TEXT = "窦性心律，心率 {hr} 次/分，正常心电图 sinus rhythm, {hr}/min, normal ECG."
CENTRE_NAMES = {Service.IMAGING: "影像中心 Imaging Centre", Service.ECG: "心电中心 ECG Centre"}
CRITICAL_FINDINGS = ("stemi", "vt", "af_rvr", "complete_av_block")


# ----- the database --------------------------------------------------------------------------
def create_database(admin_url: str, name: str) -> str:
    """A fresh, empty database ``name`` (dropped first if it exists); returns its URL."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


# ----- the consortium ------------------------------------------------------------------------
@dataclass
class Centre:
    id: int
    code: str
    service: str
    facility_id: int
    tier: str
    readers: list[int] = field(default_factory=list)


@dataclass
class Consortium:
    """What the load generator and the case generator need to know of the seeded network."""

    #: township/county facility id -> (tier, code, {service: centre reading for it})
    origins: dict[int, tuple[str, str, dict[str, Centre]]]
    #: county centre id -> the tertiary centre of the same service above it
    upward: dict[int, Centre]
    centres: dict[int, Centre]
    #: (username, user id, centre id) of every bench reader
    readers: list[tuple[str, int, int]]


def build_consortium(db: Database, counties: int = 4, townships: int = 40) -> Consortium:
    """The demo consortium grown to ``counties`` county and ``townships`` township facilities
    under two tertiary hospitals, with reading centres, links, readers and clinic accounts."""
    seed_demo(db)
    password = BENCH_HASHER.hash(BENCH_PASSWORD)
    per_county = townships // counties
    staff = {
        (Tier.COUNTY.value, Service.IMAGING.value): 30,
        (Tier.COUNTY.value, Service.ECG.value): 12,
        (Tier.TERTIARY.value, Service.IMAGING.value): 16,
        (Tier.TERTIARY.value, Service.ECG.value): 8,
    }
    with db.session() as session:
        by_code = {f.code: f for f in session.scalars(select(Facility))}

        def facility(code: str, name: str, tier: Tier, parent: str | None) -> Facility:
            if code not in by_code:
                fac = Facility(
                    code=code,
                    name=name,
                    tier=tier.value,
                    parent_id=by_code[parent].id if parent else None,
                    ae_title=f"AE{code}"[:16] if tier != Tier.TERTIARY else None,
                )
                session.add(fac)
                session.flush()
                by_code[code] = fac
            return by_code[code]

        tertiary = [facility("PH", "", Tier.TERTIARY, None)]
        tertiary.append(facility("TH2", "市中心医院 City Central Hospital", Tier.TERTIARY, None))
        county_codes = ["CH"] + [f"C{i}" for i in range(2, counties + 1)]
        county_facs = []
        for i, code in enumerate(county_codes):
            lead = tertiary[0] if i < counties // 2 else tertiary[1]
            county_facs.append(
                facility(
                    code, f"第{i + 1}县人民医院 County Hospital {i + 1}", Tier.COUNTY, lead.code
                )
            )
        township_facs: list[tuple[Facility, Facility]] = []
        existing = {"T1": 0, "T2": 0}  # the demo clinics belong to the first county
        for code, county_idx in existing.items():
            township_facs.append((by_code[code], county_facs[county_idx]))
        n = len(existing)
        for ci, county in enumerate(county_facs):
            quota = per_county - (len(existing) if ci == 0 else 0)
            for _ in range(quota):
                n += 1
                code = f"T{n:02d}"
                township_facs.append(
                    (
                        facility(
                            code, f"第{n}乡镇卫生院 Township Centre {n}", Tier.TOWNSHIP, county.code
                        ),
                        county,
                    )
                )

        centres_by_fac: dict[tuple[int, str], ReadingCentre] = {
            (c.facility_id, c.service): c for c in session.scalars(select(ReadingCentre))
        }
        for fac in [*tertiary, *county_facs]:
            for service in Service:
                if (fac.id, service.value) not in centres_by_fac:
                    centre = ReadingCentre(
                        code=f"{fac.code}-{service.value.upper()}",
                        facility_id=fac.id,
                        name=f"{fac.name} {CENTRE_NAMES[service]}",
                        service=service.value,
                        modalities=[],
                        subspecialties=["neuro", "msk"] if fac.tier == "tertiary" else [],
                    )
                    session.add(centre)
                    session.flush()
                    centres_by_fac[fac.id, service.value] = centre
        links = {
            (link.origin_facility_id, link.centre_id)
            for link in session.scalars(select(ReadingLink))
        }

        def link(origin: Facility, lead: Facility) -> None:
            for service in Service:
                centre = centres_by_fac[lead.id, service.value]
                if (origin.id, centre.id) not in links:
                    session.add(ReadingLink(origin_facility_id=origin.id, centre_id=centre.id))
                    links.add((origin.id, centre.id))

        for town, county in township_facs:
            link(town, county)
        by_id = {f.id: f for f in by_code.values()}
        for county in county_facs:
            assert county.parent_id is not None
            link(county, by_id[county.parent_id])

        usernames = set(session.scalars(select(User.username)))
        for fac in [*county_facs, *tertiary]:
            for service in Service:
                centre = centres_by_fac[fac.id, service.value]
                for k in range(1, staff[fac.tier, service.value] + 1):
                    name = f"r-{fac.code.lower()}-{service.value}-{k:02d}"
                    if name in usernames:
                        continue
                    surname = SURNAMES[(k + fac.id) % len(SURNAMES)]
                    session.add(
                        User(
                            username=name,
                            display_name=f"{surname}医生 Dr {surname} ({centre.code} {k})",
                            password_hash=password,
                            role=Role.READER.value,
                            facility_id=fac.id,
                            centre_id=centre.id,
                            qualifications=[],
                            may_sign_final=k % 6 != 0,  # every sixth is a resident
                        )
                    )
        for town, _ in township_facs:
            name = f"clinic-{town.code.lower()}"
            if name not in usernames:
                session.add(
                    User(
                        username=name,
                        display_name=f"{town.name} 医生",
                        password_hash=password,
                        role=Role.CLINIC.value,
                        facility_id=town.id,
                    )
                )
        session.flush()

        centres = {
            c.id: Centre(c.id, c.code, c.service, c.facility_id, by_id[c.facility_id].tier)
            for c in centres_by_fac.values()
        }
        readers: list[tuple[str, int, int]] = []
        for user in session.scalars(
            select(User).where(User.role == Role.READER.value).order_by(User.id)
        ):
            if user.centre_id in centres:
                centres[user.centre_id].readers.append(user.id)
                if user.username.startswith("r-"):
                    readers.append((user.username, user.id, user.centre_id))
        origins: dict[int, tuple[str, str, dict[str, Centre]]] = {}
        for town, county in township_facs:
            origins[town.id] = (
                Tier.TOWNSHIP.value,
                town.code,
                {s.value: centres[centres_by_fac[county.id, s.value].id] for s in Service},
            )
        upward: dict[int, Centre] = {}
        for county in county_facs:
            lead_id = county.parent_id
            assert lead_id is not None
            origins[county.id] = (
                Tier.COUNTY.value,
                county.code,
                {s.value: centres[centres_by_fac[lead_id, s.value].id] for s in Service},
            )
            for s in Service:
                upward[centres_by_fac[county.id, s.value].id] = centres[
                    centres_by_fac[lead_id, s.value].id
                ]
        return Consortium(origins, upward, centres, readers)


# ----- the cases -----------------------------------------------------------------------------
@dataclass
class Rows:
    """Rows per table, as tuples in the column order of ``COLUMNS``."""

    patients: list[tuple[Any, ...]] = field(default_factory=list)
    cases: list[tuple[Any, ...]] = field(default_factory=list)
    studies: list[tuple[Any, ...]] = field(default_factory=list)
    series: list[tuple[Any, ...]] = field(default_factory=list)
    ecg_records: list[tuple[Any, ...]] = field(default_factory=list)
    reports: list[tuple[Any, ...]] = field(default_factory=list)
    case_events: list[tuple[Any, ...]] = field(default_factory=list)


COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("id", "issuer", "patient_id", "name", "birth_date", "sex"),
    "cases": (
        "id",
        "origin_facility_id",
        "patient_id",
        "kind",
        "priority",
        "priority_rank",
        "status",
        "centre_id",
        "reader_id",
        "clinical_question",
        "body_part",
        "subspecialty",
        "arrived_at",
        "sla_deadline",
        "escalate_at",
        "escalations",
        "second_opinion",
        "claim_kind",
        "claimed_at",
        "lease_expires_at",
        "updated_at",
    ),
    "studies": (
        "id",
        "study_uid",
        "case_id",
        "patient_id",
        "accession_number",
        "study_date",
        "study_time",
        "description",
        "modalities",
        "instance_count",
        "first_received_at",
        "last_received_at",
        "completed_at",
        "completed_instance_count",
    ),
    "series": (
        "id",
        "series_uid",
        "study_id",
        "modality",
        "series_number",
        "description",
        "body_part",
        "instance_count",
    ),
    "ecg_records": (
        "id",
        "case_id",
        "source_format",
        "original_keys",
        "waveform_key",
        "sampling_rate",
        "lead_names",
        "duration_s",
        "acquired_at",
        "received_at",
        "analysis",
        "analysed_at",
        "critical",
    ),
    "reports": (
        "id",
        "case_id",
        "version",
        "status",
        "text",
        "template",
        "author_id",
        "created_at",
    ),
    "case_events": ("id", "case_id", "at", "kind", "actor_id", "detail"),
}

LEADS = json.dumps(["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"])


def _pick(rng: random.Random, weighted: Sequence[tuple[str, float]]) -> str:
    return rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


def _uid(n: int, part: int) -> str:
    return f"1.2.826.0.1.3680043.10.543.{part}.{n}"


def generate(
    consortium: Consortium, cases: int, open_cases: int, rng: random.Random, now: datetime
) -> Rows:
    """Every row of the case history, in memory (about 1 M tuples for 100,000 cases)."""
    rows = Rows()
    origin_ids = list(consortium.origins)
    township_ids = [o for o in origin_ids if consortium.origins[o][0] == Tier.TOWNSHIP.value]
    county_ids = [o for o in origin_ids if consortium.origins[o][0] == Tier.COUNTY.value]
    patients_by_origin: dict[int, list[int]] = {o: [] for o in origin_ids}
    n_patients = 0
    event_id = study_id = series_id = ecg_id = report_id = 0

    def event(case_id: int, at: datetime, kind: str, actor: int | None, **detail: Any) -> None:
        nonlocal event_id
        event_id += 1
        rows.case_events.append((event_id, case_id, at, kind, actor, json.dumps(detail)))

    open_ids = set(rng.sample(range(1, cases + 1), min(open_cases, cases)))
    for case_id in range(1, cases + 1):
        origin = rng.choice(township_ids) if rng.random() < 0.9 else rng.choice(county_ids)
        _tier, origin_code, reading = consortium.origins[origin]
        # a returning patient two times in five: priors across the consortium
        pool = patients_by_origin[origin]
        if pool and rng.random() < 0.4:
            patient = rng.choice(pool)
        else:
            n_patients += 1
            patient = n_patients
            pool.append(patient)
            sex = rng.choice("MF")
            rows.patients.append(
                (
                    patient,
                    origin_code,
                    f"{origin_code}{n_patients:07d}",
                    rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN),
                    f"{rng.randint(1930, 2022)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                    sex,
                )
            )
        kind = "imaging" if rng.random() < 0.5 else "ecg"
        priority, rank = _pick_priority(rng)
        sla = SLA_SECONDS[priority]
        centre = reading[kind if kind == "ecg" else "imaging"]
        escalations = 0
        if centre.id in consortium.upward and rng.random() < 0.08:
            centre = consortium.upward[centre.id]
            escalations = 1
        is_open = case_id in open_ids
        if is_open:
            status = _pick(rng, (("routed", 0.65), ("claimed", 0.20), ("preliminary", 0.15)))
            # recent: well inside the escalation threshold (half the SLA)
            arrived = now - timedelta(seconds=rng.uniform(30, sla * 0.4))
        else:
            status = "final"
            arrived = now - timedelta(seconds=rng.uniform(sla * 2, 365 * 86400))
        complete = arrived + timedelta(seconds=rng.uniform(5, 300 if kind == "imaging" else 10))
        routed = complete + timedelta(seconds=rng.uniform(0.2, 3))
        deadline = complete + timedelta(seconds=sla)
        escalate = complete + timedelta(seconds=sla * 0.5)
        modality = _pick(rng, MODALITIES) if kind == "imaging" else "ECG"
        body = rng.choice(BODY_PARTS[modality]) if kind == "imaging" else ""
        reader = claim_kind = claimed = lease = None
        updated = routed
        event(case_id, arrived, "first_instance", None, source=f"dimse:AE{origin_code}")
        event(case_id, complete, "study_complete", None, reason="association released")
        event(case_id, routed, "routed", None, centre_id=centre.id, rule="default")
        if status != "routed":
            reader = rng.choice(centre.readers)
            claim_kind = "claim" if rng.random() < 0.7 else "push"
            if is_open:
                claimed = routed + (now - routed) * rng.uniform(0.1, 0.9)
            else:
                claimed = routed + timedelta(seconds=sla * rng.uniform(0.02, 0.6))
            lease = now + timedelta(minutes=15) if status == "claimed" else None
            updated = claimed
            event(case_id, claimed, "claimed", reader, claim_kind=claim_kind)
        if status in ("preliminary", "final"):
            assert claimed is not None and reader is not None
            text_ = (
                REPORT_TEXT
                if kind == "imaging"
                else ECG_REPORT_TEXT.format(hr=rng.randint(55, 100))
            )
            version = 0
            if status == "preliminary" or rng.random() < 0.25:
                prelim = claimed + (now - claimed if is_open else timedelta(minutes=20)) * 0.5
                version += 1
                report_id += 1
                rows.reports.append(
                    (report_id, case_id, version, "preliminary", text_, "", reader, prelim)
                )
                event(case_id, prelim, "report_preliminary", reader, version=version)
                updated = prelim
            if status == "final":
                final = claimed + timedelta(seconds=sla * rng.uniform(0.01, 0.3))
                version += 1
                report_id += 1
                rows.reports.append(
                    (report_id, case_id, version, "final", text_, "", reader, final)
                )
                event(case_id, final, "report_final", reader, version=version)
                event(case_id, final + timedelta(seconds=1), "delivered", None)
                updated = final
                lease = None
        rows.cases.append(
            (
                case_id,
                origin,
                patient,
                kind,
                priority,
                rank,
                status,
                centre.id,
                reader,
                rng.choice(QUESTIONS),
                body,
                "",
                arrived,
                deadline,
                escalate if status == "routed" else None,
                escalations,
                False,
                claim_kind,
                claimed,
                lease,
                updated,
            )
        )
        if kind == "imaging":
            study_id += 1
            series_id += 1
            count = {"DX": 2, "CR": 2, "US": 12, "CT": 180, "MR": 240}[modality]
            rows.studies.append(
                (
                    study_id,
                    _uid(case_id, 1),
                    case_id,
                    patient,
                    f"A{case_id:09d}",
                    arrived.strftime("%Y%m%d"),
                    arrived.strftime("%H%M%S"),
                    f"{modality} {body}",
                    modality,
                    count,
                    arrived,
                    complete,
                    complete,
                    count,
                )
            )
            rows.series.append(
                (series_id, _uid(case_id, 2), study_id, modality, 1, body, body, count)
            )
        else:
            ecg_id += 1
            critical = rng.random() < 0.04
            findings = (
                [{"code": rng.choice(CRITICAL_FINDINGS), "critical": True}] if critical else []
            )
            analysis = {"heart_rate": rng.randint(50, 110), "findings": findings}
            rows.ecg_records.append(
                (
                    ecg_id,
                    case_id,
                    "wfdb",
                    json.dumps([f"ecg/{case_id}/rec.hea", f"ecg/{case_id}/rec.dat"]),
                    f"ecg/{case_id}/waveform.npz",
                    500.0,
                    LEADS,
                    10.0,
                    arrived,
                    arrived,
                    json.dumps(analysis),
                    complete,
                    critical,
                )
            )
    return rows


def _pick_priority(rng: random.Random) -> tuple[str, int]:
    r = rng.random()
    acc = 0.0
    for name, rank, share in PRIORITIES:
        acc += share
        if r < acc:
            return name, rank
    return "routine", 2


def _offset_ids(rows: Iterable[tuple[Any, ...]], offsets: dict[int, int]) -> Iterator[tuple]:
    for row in rows:
        yield tuple(
            v + offsets[i] if i in offsets and v is not None else v for i, v in enumerate(row)
        )


def copy_rows(db: Database, rows: Rows) -> dict[str, int]:
    """COPY every table in one transaction, ids moved past any existing row; sequences set."""
    counts: dict[str, int] = {}
    raw = db.engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.cursor() as cur:
            base = {}
            for table in COLUMNS:
                cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")  # noqa: S608
                base[table] = cur.fetchone()[0]
            # foreign keys inside our rows, shifted with their target table's ids
            fk = {
                "patients": {0: base["patients"]},
                "cases": {0: base["cases"], 2: base["patients"]},
                "studies": {0: base["studies"], 2: base["cases"], 3: base["patients"]},
                "series": {0: base["series"], 2: base["studies"]},
                "ecg_records": {0: base["ecg_records"], 1: base["cases"]},
                "reports": {0: base["reports"], 1: base["cases"]},
                "case_events": {0: base["case_events"], 1: base["cases"]},
            }
            for table, columns in COLUMNS.items():
                data = getattr(rows, table)
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in _offset_ids(data, fk[table]):
                        copy.write_row(row)
                counts[table] = len(data)
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT max(id) FROM {table}))"  # noqa: S608
                )
        conn.commit()
        with conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("VACUUM ANALYZE")
    finally:
        raw.close()
    return counts


def seed(
    url: str, cases: int = 100_000, open_cases: int | None = None, seed_value: int = 5
) -> tuple[Consortium, dict[str, int]]:
    """Migrate, build the consortium and load the case history; returns what was made."""
    db = Database(url)
    try:
        upgrade(db)
        consortium = build_consortium(db)
        rng = random.Random(seed_value)
        n_open = open_cases if open_cases is not None else min(5000, max(1, cases // 20))
        rows = generate(consortium, cases, n_open, rng, datetime.now(UTC))
        counts = copy_rows(db, rows)
        return consortium, counts
    finally:
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--open", type=int, default=None, help="open cases (default 5 %%, <=5000)")
    parser.add_argument("--name", default=f"telehub_bench_{uuid.uuid4().hex[:8]}")
    parser.add_argument("--admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    started = time.perf_counter()
    url = create_database(args.admin_url, args.name)
    try:
        consortium, counts = seed(url, args.cases, args.open)
        took = time.perf_counter() - started
        print(f"seeded {url} in {took:.1f} s")
        print(
            f"  {len(consortium.origins)} sending facilities, {len(consortium.centres)} centres,"
            f" {len(consortium.readers)} bench readers (password {BENCH_PASSWORD!r})"
        )
        for table, n in counts.items():
            print(f"  {table:<12} {n:>9,}")
    finally:
        if not args.keep:
            drop_database(args.admin_url, args.name)


if __name__ == "__main__":
    main()
