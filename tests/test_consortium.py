"""The consortium definition: service hours, the TOML file through the real CLI (load, export,
round trip, idempotence), every class of refused definition (nothing changed), partial files,
PostgreSQL, and the admin API over real HTTP."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from telehub import auth, consortium, service_hours
from telehub.db import Database
from telehub.db.migrate import upgrade
from telehub.db.models import AuditEntry, ReadingLink, User
from telehub.demo import DEMO_FILE, definition, seed_demo
from tests.helpers import Hub, start_hub

DEMO_TOML = Path(__file__).resolve().parents[1] / "telehub" / DEMO_FILE
SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


# ----- service hours -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mon-frx 08:00-17:30", 'unknown days "mon-frx"'),
        ("mon-fri", "needs days and times"),
        ("mon-fri 8-17", '"8" in "mon-fri 8-17" is not a time (HH:MM)'),
        ("mon-fri 0800", '"0800" in "mon-fri 0800" is not a time range'),
        ("mon-fri 08:00-25:00", '"25:00" in "mon-fri 08:00-25:00" is not a time of day'),
        ("mon-fri 08:61-09:00", "is not a time of day"),
        ("sat 24:00-08:00", "24:00 can only end a range"),
        ("sun 08:00-08:00", "is empty (start equals end)"),
    ],
)
def test_bad_service_hours_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        service_hours.validate(text)
    assert message in str(caught.value)


def test_service_hours_in_a_zone_without_dst() -> None:
    hours = "mon-fri 08:00-17:30; sat 08:00-12:00"
    # 2024-06-07 is a Friday, 2024-06-08 a Saturday, 2024-06-09 a Sunday.
    assert service_hours.is_open(
        hours, "Asia/Shanghai", datetime(2024, 6, 7, 8, 0, tzinfo=SHANGHAI)
    )
    assert service_hours.is_open(
        hours, "Asia/Shanghai", datetime(2024, 6, 7, 17, 29, tzinfo=SHANGHAI)
    )
    assert not service_hours.is_open(
        hours, "Asia/Shanghai", datetime(2024, 6, 7, 17, 30, tzinfo=SHANGHAI)
    )
    assert service_hours.is_open(
        hours, "Asia/Shanghai", datetime(2024, 6, 8, 11, 0, tzinfo=SHANGHAI)
    )
    assert not service_hours.is_open(
        hours, "Asia/Shanghai", datetime(2024, 6, 8, 13, 0, tzinfo=SHANGHAI)
    )
    assert not service_hours.is_open(
        hours, "Asia/Shanghai", datetime(2024, 6, 9, 10, 0, tzinfo=SHANGHAI)
    )
    # The same instant given in UTC: 00:30 UTC is 08:30 in Shanghai.
    assert service_hours.is_open(
        hours, "Asia/Shanghai", datetime.fromisoformat("2024-06-07T00:30Z")
    )
    assert not service_hours.is_open(
        hours, "Asia/Shanghai", datetime.fromisoformat("2024-06-06T23:30Z")
    )


def test_overnight_daily_and_empty_hours() -> None:
    night = "mon-sun 20:00-08:00"
    assert service_hours.is_open(
        night, "Asia/Shanghai", datetime(2024, 6, 9, 23, 0, tzinfo=SHANGHAI)
    )
    # Monday 07:59 is the tail of Sunday's night.
    assert service_hours.is_open(
        night, "Asia/Shanghai", datetime(2024, 6, 10, 7, 59, tzinfo=SHANGHAI)
    )
    assert not service_hours.is_open(
        night, "Asia/Shanghai", datetime(2024, 6, 10, 12, 0, tzinfo=SHANGHAI)
    )
    friday_night = "fri 22:00-06:00"
    assert service_hours.is_open(friday_night, "UTC", datetime.fromisoformat("2024-06-08T05:00Z"))
    assert not service_hours.is_open(
        friday_night, "UTC", datetime.fromisoformat("2024-06-09T05:00Z")
    )
    assert service_hours.is_open(
        "daily 00:00-24:00", "Asia/Shanghai", datetime(2024, 6, 9, 23, 59, 59, tzinfo=SHANGHAI)
    )
    assert service_hours.is_open("", "Asia/Shanghai", datetime(2024, 6, 9, 3, 0, tzinfo=SHANGHAI))
    split = "mon,wed 08:00-12:00,14:00-17:00"
    assert service_hours.is_open(split, "UTC", datetime.fromisoformat("2024-06-12T15:00Z"))
    assert not service_hours.is_open(split, "UTC", datetime.fromisoformat("2024-06-12T13:00Z"))
    assert not service_hours.is_open(split, "UTC", datetime.fromisoformat("2024-06-11T09:00Z"))


def test_service_hours_follow_daylight_saving_time() -> None:
    """Berlin: 08:00-17:00 local is 07:00 UTC in winter and 06:00 UTC in summer (DST began on
    2024-03-31), so the same UTC time of day is closed one Friday and open the next."""
    hours = "mon-fri 08:00-17:00"
    before = datetime.fromisoformat("2024-03-29T06:30Z")  # Friday, 07:30 CET
    after = datetime.fromisoformat("2024-04-05T06:30Z")  # Friday, 08:30 CEST
    assert not service_hours.is_open(hours, "Europe/Berlin", before)
    assert service_hours.is_open(hours, "Europe/Berlin", after)
    assert service_hours.is_open(hours, "Europe/Berlin", datetime(2024, 3, 29, 8, 0, tzinfo=BERLIN))
    assert service_hours.is_open(hours, "Europe/Berlin", datetime(2024, 4, 5, 8, 0, tzinfo=BERLIN))


# ----- the CLI ---------------------------------------------------------------------------------
def telehub(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telehub", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TELEHUB_DATA": str(data)},
        timeout=120,
    )


def test_cli_load_export_round_trip(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    # The demo file's password "demo" is fine for the demo seed, refused for a real load.
    weak = telehub(first, "consortium", "load", "--dry-run", str(DEMO_TOML))
    assert weak.returncode != 0 and "password" in (weak.stdout + weak.stderr)

    # The demo file with its passwords hashed once here (argon2 is slow on purpose).
    hashed = tmp_path / "demo.toml"
    demo_hash = auth.hash_password("demo")
    hashed.write_text(
        DEMO_TOML.read_text(encoding="utf-8").replace(
            'password = "demo"', f'password_hash = "{demo_hash}"'
        ),
        encoding="utf-8",
    )
    dry = telehub(first, "consortium", "load", "--dry-run", str(hashed))
    assert dry.returncode == 0, dry.stderr
    assert 'create facility "PH"' in dry.stdout
    assert "dry run: 23 change(s) would be made; nothing was written" in dry.stdout
    with _sqlite(first) as db:
        assert "[[facilities]]" not in _export(db)
    loaded = telehub(first, "consortium", "load", str(hashed))
    assert loaded.returncode == 0, loaded.stderr
    assert "23 change(s) applied" in loaded.stdout
    with _sqlite(first) as db:
        again = consortium.load(db, definition())
        assert not again.changes
        assert "9 existing user(s) keep theirs" in again.summary()

    exported = tmp_path / "exported.toml"
    done = telehub(first, "consortium", "export", "--with-password-hashes", "-o", str(exported))
    assert done.returncode == 0, done.stderr
    text = exported.read_text(encoding="utf-8")
    assert 'code = "CH-IMAGING"' in text and f'password_hash = "{demo_hash}"' in text
    # The export loads into a fresh hub and comes out the same; users can sign in there.
    into_second = telehub(second, "consortium", "load", str(exported))
    assert into_second.returncode == 0, into_second.stderr
    assert "23 change(s) applied" in into_second.stdout
    plain = telehub(second, "consortium", "export")
    assert plain.returncode == 0, plain.stderr
    assert "password_hash" not in plain.stdout
    with _sqlite(first) as db:
        assert plain.stdout == _export(db, hashes=False)
    with _sqlite(second) as db:
        assert not consortium.load(db, consortium.parse_toml(text)).changes
        token, who = auth.login(db, "expert", "demo", 60)
        assert who.username == "expert" and token


def test_cli_refuses_a_bad_file_and_changes_nothing(demo_db: Database, tmp_path: Path) -> None:
    before = _export(demo_db)
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[facilities]]\ncode = "V1"\nname = "Village 1"\ntier = "village"\n\n'
        '[[grids]]\nlead = "T1"\ncovers = ["V1", "T9"]\n'
        '[[users]]\nusername = "newreader"\nrole = "reader"\nfacility = "CH"\npassword = "x"\n',
        encoding="utf-8",
    )
    done = telehub(tmp_path / "data", "consortium", "load", str(bad))
    assert done.returncode == 1
    assert "consortium definition refused, nothing was changed" in done.stderr
    assert 'grids[0]: facility "T9" is not defined' in done.stderr
    assert 'users[0] "newreader": a reader needs a centre' in done.stderr
    assert _export(demo_db) == before


# ----- refused definitions: every class, nothing changed ----------------------------------------
@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database with the demo consortium, built once and copied per test."""
    path = tmp_path_factory.mktemp("template") / "telehub.sqlite3"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    seed_demo(db)
    db.dispose()
    return path


@pytest.fixture
def demo_db(demo_template: Path, tmp_path: Path) -> Iterator[Database]:
    """The demo hub's database, in the data folder ``tmp_path / "data"``."""
    (tmp_path / "data").mkdir()
    shutil.copy(demo_template, tmp_path / "data" / "telehub.sqlite3")
    with _sqlite(tmp_path / "data") as db:
        yield db


@contextlib.contextmanager
def _sqlite(data: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{data / 'telehub.sqlite3'}")
    try:
        yield db
    finally:
        db.dispose()


def _export(db: Database, hashes: bool = True) -> str:
    with db.reader() as session:
        return consortium.to_toml(consortium.export(session, with_password_hashes=hashes))


FAC = '[[facilities]]\ncode = "{code}"\nname = "{code} facility"\ntier = "{tier}"\n'
READER = (
    '[[users]]\nusername = "{name}"\nrole = "reader"\nfacility = "CH"\ncentre = "{centre}"\n'
    'qualifications = {quals}\npassword = "pw"\n'
)
RULE = '[[rules]]\nname = "r"\ncentre = "{centre}"\n{match}\n'


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        # unknown references
        (
            '[[grids]]\nlead = "CH"\ncovers = ["T1", "T9"]\n',
            'grids[0]: facility "T9" is not defined',
        ),
        (
            '[[centres]]\ncode = "X-IMG"\nfacility = "X"\nservice = "imaging"\nname = "x"\n',
            'centres[0] "X-IMG": facility "X" is not defined',
        ),
        ('[[links]]\norigin = "T1"\ncentre = "NOPE"\n', 'links[0]: centre "NOPE" is not defined'),
        (
            READER.format(name="r9", centre="NOPE", quals="[]"),
            'users[0] "r9": centre "NOPE" is not defined',
        ),
        (
            RULE.format(centre="NOPE", match=""),
            'rules[0] "r": centre "NOPE" is not defined',
        ),
        (
            RULE.format(centre="CH-IMAGING", match='origins = ["T7"]'),
            'rules[0] "r": origin facility "T7" is not defined',
        ),
        # duplicates
        (
            FAC.format(code="T5", tier="township") + FAC.format(code="T5", tier="township"),
            'facilities[1] "T5": duplicate code "T5" (also facilities[0] "T5")',
        ),
        (
            FAC.format(code="T5", tier="township") + 'ae_title = "CLINIC1"\n',
            'facilities[0] "T5": AE title "CLINIC1" is also used by facility "T1"',
        ),
        (
            READER.format(name="dup", centre="CH-IMAGING", quals="[]") * 2,
            'users[1] "dup": duplicate username "dup"',
        ),
        (
            RULE.format(centre="CH-IMAGING", match="") * 2,
            'rules[1] "r": duplicate name "r"',
        ),
        # grid cycles and tiers
        ('[[grids]]\nlead = "CH"\ncovers = ["CH"]\n', 'grids[0]: facility "CH" leads itself'),
        (
            FAC.format(code="C2", tier="county")
            + '\n[[grids]]\nlead = "C2"\ncovers = ["CH"]\n\n[[grids]]\nlead = "CH"\n'
            'covers = ["C2"]\n',
            'grid cycle "C2" -> "CH" -> "C2"',
        ),
        (
            '[[grids]]\nlead = "T1"\ncovers = ["T2"]\n',
            'grids[0]: lead "T1" (township) must be of a higher tier than "T2" (township)',
        ),
        (
            FAC.format(code="V1", tier="village") + '\n[[grids]]\nlead = "V1"\ncovers = ["T1"]\n',
            'grids[0]: lead "V1" (village) must be of a higher tier than "T1" (township)',
        ),
        # centres
        (
            '[[centres]]\ncode = "CH-PATH"\nfacility = "CH"\nservice = "pathology"\nname = "p"\n',
            'centres[0] "CH-PATH": service must be one of imaging, ecg',
        ),
        (
            '[[centres]]\ncode = "CH-ECG"\nmodalities = ["CT"]\n',
            'centres[0] "CH-ECG": an ECG centre reads no imaging modality (CT)',
        ),
        (
            '[[centres]]\ncode = "CH-IMAGING"\nservice_hours = "mon-fri 8am-5pm"\n',
            'centres[0] "CH-IMAGING": service hours are not valid: "8am" in "mon-fri 8am-5pm" is '
            "not a time (HH:MM)",
        ),
        (
            '[[centres]]\ncode = "CH-IMAGING"\ntimezone = "Asia/Beijing"\n',
            'centres[0] "CH-IMAGING": timezone "Asia/Beijing" is not a known time zone',
        ),
        # rules a centre cannot serve
        (
            RULE.format(centre="CH-IMAGING", match='kinds = ["ecg"]'),
            'rules[0] "r": kind "ecg" cannot be read by imaging centre "CH-IMAGING"',
        ),
        (
            '[[centres]]\ncode = "CH-CT"\nfacility = "CH"\nservice = "imaging"\nname = "CT"\n'
            'modalities = ["CT"]\n' + RULE.format(centre="CH-CT", match='modalities = ["MR"]'),
            'rules[0] "r": centre "CH-CT" does not read MR',
        ),
        (
            RULE.format(centre="CH-IMAGING", match='subspecialties = ["neuro"]'),
            'rules[0] "r": centre "CH-IMAGING" offers no subspecialty "neuro"',
        ),
        (
            RULE.format(centre="CH-IMAGING", match='modalities = ["XYZ"]'),
            'rules[0] "r": modalities has "XYZ", which is not a DICOM modality code',
        ),
        # readers
        (
            '[[users]]\nusername = "r9"\nrole = "reader"\nfacility = "CH"\npassword = "pw"\n',
            'users[0] "r9": a reader needs a centre',
        ),
        (
            READER.format(name="r9", centre="CH-IMAGING", quals='["CT", "cardiac"]'),
            'users[0] "r9": qualification "cardiac" is neither a DICOM modality code, "ECG", '
            'nor a subspecialty of centre "CH-IMAGING"',
        ),
        (
            READER.format(name="r9", centre="CH-ECG", quals='["CT"]'),
            'users[0] "r9": qualification "CT": centre "CH-ECG" does not read CT',
        ),
        (
            '[[users]]\nusername = "r9"\nrole = "reader"\nfacility = "CH"\ncentre = "CH-ECG"\n',
            'users[0] "r9": a new user needs a password',
        ),
        # facility fields
        (
            FAC.format(code="T5", tier="township") + 'dicom_networks = "10.2.0.0/33"\n',
            'facilities[0] "T5": dicom networks is not a list of addresses or networks',
        ),
        (FAC.format(code="T5", tier="city"), 'facilities[0] "T5": tier must be one of'),
        (FAC.format(code="T5", tier="township") + 'teir = "x"\n', 'unknown key "teir"'),
        ('[[hospitals]]\ncode = "X"\n', 'unknown section "hospitals"'),
    ],
)
def test_refused_definitions_change_nothing(demo_db: Database, toml: str, message: str) -> None:
    before = _export(demo_db)
    with pytest.raises(consortium.ConsortiumError) as caught:
        consortium.load(demo_db, consortium.parse_toml(toml))
    assert any(message in problem for problem in caught.value.problems), caught.value.problems
    assert _export(demo_db) == before


def test_every_problem_is_reported_at_once(demo_db: Database) -> None:
    toml = (
        '[[grids]]\nlead = "CH"\ncovers = ["T9"]\n'
        + RULE.format(centre="CH-IMAGING", match='kinds = ["ecg"]')
        + '[[centres]]\ncode = "CH-ECG"\ntimezone = "Nowhere/City"\n'
    )
    with pytest.raises(consortium.ConsortiumError) as caught:
        consortium.load(demo_db, consortium.parse_toml(toml))
    assert len(caught.value.problems) == 3
    assert "3 problems" in caught.value.message


def test_not_toml_at_all() -> None:
    with pytest.raises(consortium.ConsortiumError, match="not valid TOML"):
        consortium.parse_toml("[[facilities]\ncode = ")


# ----- partial definitions --------------------------------------------------------------------
def test_a_partial_file_leaves_everything_else_alone(demo_db: Database) -> None:
    with demo_db.session() as session:
        reader = session.scalar(select(User).where(User.username == "reader"))
        assert reader is not None
        reader.on_duty = True  # the reader's own switch; the file does not mention it
        old_hash = reader.password_hash
    toml = (
        FAC.format(code="V1", tier="village")
        + '\n[[grids]]\nlead = "T1"\ncovers = ["V1"]\n'
        + '\n[[users]]\nusername = "reader"\nqualifications = ["CT", "MR"]\npassword = "new"\n'
    )
    outcome = consortium.load(demo_db, consortium.parse_toml(toml))
    # T1, V1's lead, has no reading centres: no default links.
    assert [str(c) for c in outcome.changes] == [
        'create facility "V1"',
        'update user "reader": qualifications [] -> ["CT", "MR"]',
    ]
    assert "1 existing user(s) keep theirs (reader)" in outcome.notes[0]
    with demo_db.reader() as session:
        reader = session.scalar(select(User).where(User.username == "reader"))
        assert reader is not None and reader.on_duty and reader.password_hash == old_hash
        assert reader.qualifications == ["CT", "MR"]
        assert session.scalar(select(User).where(User.username == "clinic2")) is not None
    assert not consortium.load(demo_db, consortium.parse_toml(toml)).changes


def test_a_new_facility_in_a_grid_is_read_by_its_leads_centres(demo_db: Database) -> None:
    toml = FAC.format(code="T3", tier="township") + '\n[[grids]]\nlead = "CH"\ncovers = ["T3"]\n'
    outcome = consortium.load(demo_db, consortium.parse_toml(toml))
    assert [str(c) for c in outcome.changes] == [
        'create facility "T3"',
        'create link "T3" -> "CH-IMAGING"',
        'create link "T3" -> "CH-ECG"',
    ]
    # Its own links instead of the defaults: only those.
    toml4 = (
        FAC.format(code="T4", tier="township")
        + '\n[[grids]]\nlead = "CH"\ncovers = ["T4"]\n'
        + '\n[[links]]\norigin = "T4"\ncentre = "PH-IMAGING"\nmodality = "MR"\n'
    )
    consortium.load(demo_db, consortium.parse_toml(toml4))
    with demo_db.reader() as session:
        t4_links = session.scalars(
            select(ReadingLink).join(ReadingLink.centre).where(ReadingLink.modality == "MR")
        ).all()
        assert [(link.centre.code, link.modality) for link in t4_links] == [("PH-IMAGING", "MR")]


def test_demo_and_second_load_on_postgresql(postgres_url: str) -> None:
    db = Database(postgres_url)
    try:
        upgrade(db)
        assert seed_demo(db) is True
        assert seed_demo(db) is False
        assert not consortium.load(db, definition()).changes
        with db.reader() as session:
            exported = consortium.export(session)
        assert not consortium.load(db, exported).changes
        assert [c["code"] for c in exported["centres"]] == [
            "PH-IMAGING",
            "PH-ECG",
            "CH-IMAGING",
            "CH-ECG",
        ]
        assert [u["username"] for u in exported["users"]] == [
            "admin",
            "reader",
            "reader2",
            "resident",
            "ecgreader",
            "expert",
            "ecgexpert",
            "clinic",
            "clinic2",
        ]
        assert len(exported["links"]) == 6
    finally:
        db.dispose()


# ----- the admin API over HTTP -----------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    started = start_hub(tmp_path_factory.mktemp("consortium"))
    yield started
    started.proc.stop()


def test_admin_api_builds_a_consortium(hub: Hub) -> None:
    api = hub.api
    admin = api.login("admin")
    made = api.post(
        "/api/v1/consortium/facilities",
        {
            "code": "CH2",
            "name": "二县医院 Second County Hospital",
            "tier": "county",
            "parent": "PH",
        },
        admin,
    )
    assert made.status == 201, made.body
    assert made.body["parent"] == "PH"
    centre = api.post(
        "/api/v1/consortium/centres",
        {
            "code": "CH2-IMAGING",
            "facility": "CH2",
            "service": "imaging",
            "name": "二县影像中心 Second County Imaging",
            "modalities": ["CT", "dx"],
            "subspecialties": ["MSK"],
            "service_hours": "mon-fri 08:00-17:30; sat 08:00-12:00",
        },
        admin,
    )
    assert centre.status == 201, centre.body
    assert centre.body["modalities"] == ["CT", "DX"] and centre.body["subspecialties"] == ["msk"]
    reader = api.post(
        "/api/v1/consortium/users",
        {
            "username": "ch2reader",
            "display_name": "钱医生 Dr Qian",
            "role": "reader",
            "facility": "CH2",
            "centre": "CH2-IMAGING",
            "qualifications": ["CT", "msk"],
            "max_open_cases": 5,
            "password": "s3cret-pass",
        },
        admin,
    )
    assert reader.status == 201, reader.body
    assert "password_hash" not in reader.body and "password" not in reader.body
    assert api.login("ch2reader", "s3cret-pass")
    reset = api.request(
        "PATCH",
        f"/api/v1/consortium/users/{reader.body['id']}",
        admin,
        body={"password": "n3w-pass-2026", "on_duty": True, "max_open_cases": None},
    )
    assert reset.status == 200, reset.body
    assert reset.body["on_duty"] is True and reset.body["max_open_cases"] is None
    assert (
        api.post("/api/v1/auth/login", {"username": "ch2reader", "password": "s3cret-pass"}).status
        == 401
    )
    assert api.login("ch2reader", "n3w-pass-2026")
    rule = api.post(
        "/api/v1/consortium/rules",
        {
            "name": "CT MSK to CH2",
            "modalities": ["CT"],
            "subspecialties": ["msk"],
            "centre": "CH2-IMAGING",
        },
        admin,
    )
    assert rule.status == 201, rule.body
    moved = api.request(
        "PATCH", f"/api/v1/consortium/rules/{rule.body['id']}", admin, body={"position": 7}
    )
    assert moved.status == 200 and moved.body["position"] == 7
    link = api.post(
        "/api/v1/consortium/links",
        {"origin": "T1", "centre": "CH2-IMAGING", "modality": "CT"},
        admin,
    )
    assert link.status == 201, link.body
    assert (
        api.post(
            "/api/v1/consortium/links",
            {"origin": "T1", "centre": "CH2-IMAGING", "modality": "CT"},
            admin,
        ).status
        == 409
    )
    relinked = api.request(
        "PATCH", f"/api/v1/consortium/links/{link.body['id']}", admin, body={"modality": "DX"}
    )
    assert relinked.status == 200, relinked.body
    assert (relinked.body["origin"], relinked.body["modality"]) == ("T1", "DX")
    assert (
        api.request("DELETE", f"/api/v1/consortium/links/{relinked.body['id']}", admin).status
        == 200
    )
    second = api.post(
        "/api/v1/consortium/rules",
        {"name": "DX to CH2", "modalities": ["DX"], "centre": "CH2-IMAGING"},
        admin,
    )
    assert second.status == 201, second.body
    order = api.post("/api/v1/consortium/rules/order", {"order": [second.body["id"]]}, admin)
    assert order.status == 200, order.body
    names = [r["name"] for r in order.body["rules"]]
    assert names.index("DX to CH2") < names.index("CT MSK to CH2")
    assert [r["position"] for r in order.body["rules"]][:2] == [10, 20]
    # Writes go through the same checks as a file.
    bad = api.post(
        "/api/v1/consortium/rules",
        {"name": "ECG to imaging", "kinds": ["ecg"], "centre": "CH2-IMAGING"},
        admin,
    )
    assert bad.status == 400
    assert bad.body["error"] == "bad_consortium"
    assert (
        'rule "ECG to imaging": kind "ecg" cannot be read by imaging centre' in bad.body["message"]
    )
    renamed = api.request(
        "PATCH", f"/api/v1/consortium/facilities/{made.body['id']}", admin, body={"code": "CH3"}
    )
    assert renamed.status == 400

    # Everybody may list facilities and centres; the rest is for administrators.
    clinic = api.login("clinic")
    facilities = api.get("/api/v1/consortium/facilities", clinic)
    assert facilities.status == 200
    assert {"code": "CH2", "tier": "county"}.items() <= next(
        f for f in facilities.body["facilities"] if f["code"] == "CH2"
    ).items()
    assert "ae_title" not in facilities.body["facilities"][0]
    assert api.get("/api/v1/consortium/centres", clinic).status == 200
    assert api.get("/api/v1/consortium/users", clinic).status == 403
    assert api.get("/api/v1/consortium", clinic).status == 403
    denied = api.post(
        "/api/v1/consortium/facilities", {"code": "X", "name": "x", "tier": "village"}, clinic
    )
    assert denied.status == 403 and denied.body["error"] == "not_an_admin"
    reader_token = api.login("reader")
    assert api.post("/api/v1/consortium/rules/order", {"order": []}, reader_token).status == 403
    users = api.get("/api/v1/consortium/users", admin)
    assert users.status == 200
    assert all("password_hash" not in u for u in users.body["users"])

    with _sqlite(hub.data) as db, db.reader() as session:
        audited = {
            (a.action, a.resource_type)
            for a in session.scalars(
                select(AuditEntry).where(AuditEntry.detail["via"].as_string() == "consortium")
            )
        }
    assert {
        ("create", "facility"),
        ("create", "reading_centre"),
        ("create", "user"),
        ("create", "routing_rule"),
        ("update", "routing_rule"),
        ("create", "reading_link"),
        ("delete", "reading_link"),
    } <= audited


def test_posted_definitions_cyclic_toml_and_dry_run(hub: Hub) -> None:
    api = hub.api
    admin = api.login("admin")
    before = api.get("/api/v1/consortium", admin).body
    cyclic = {
        "facilities": [{"code": "CY1", "name": "Cycle one", "tier": "county"}],
        "grids": [{"lead": "CY1", "covers": ["CH"]}, {"lead": "CH", "covers": ["CY1"]}],
    }
    refused = api.post("/api/v1/consortium", cyclic, admin)
    assert refused.status == 400
    assert refused.body["error"] == "bad_consortium"
    assert 'grid cycle "CH" -> "CY1" -> "CH"' in refused.body["message"]
    assert api.get("/api/v1/consortium", admin).body == before

    toml = FAC.format(code="V7", tier="village") + '\n[[grids]]\nlead = "T2"\ncovers = ["V7"]\n'
    dry = api.request(
        "POST",
        "/api/v1/consortium?dry_run=true",
        admin,
        raw=toml.encode(),
        content_type="application/toml",
    )
    assert dry.status == 200, dry.body
    assert dry.body["applied"] is False
    assert dry.body["changes"][0] == {
        "action": "create",
        "type": "facility",
        "key": "V7",
        "fields": {
            "code": "V7",
            "name": "V7 facility",
            "tier": "village",
            "ae_title": None,
            "dicom_networks": "",
            "parent": "T2",
        },
    }
    assert api.get("/api/v1/consortium", admin).body == before
    applied = api.request(
        "POST", "/api/v1/consortium", admin, raw=toml.encode(), content_type="application/toml"
    )
    assert applied.status == 200 and applied.body["applied"] is True
    again = api.request(
        "POST", "/api/v1/consortium", admin, raw=toml.encode(), content_type="application/toml"
    )
    assert again.body == {"applied": False, "changes": [], "notes": []}
    garbled = api.request(
        "POST", "/api/v1/consortium", admin, raw=b"[[facilities", content_type="application/toml"
    )
    assert garbled.status == 400 and "not valid TOML" in garbled.body["message"]
    clinic = api.login("clinic")
    assert api.post("/api/v1/consortium", {"facilities": []}, clinic).status == 403


def test_the_documented_example_loads(demo_db: Database) -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "consortium.md").read_text("utf-8")
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    outcome = consortium.load(demo_db, consortium.parse_toml(example))
    assert 'create link "V1" -> "CH-ECG"' in [str(c) for c in outcome.changes]
    assert not consortium.load(demo_db, consortium.parse_toml(example)).changes
    with pytest.raises(consortium.ConsortiumError) as caught:
        consortium.load(demo_db, {"grids": [{"lead": "T1", "covers": ["CH"]}]})
    assert caught.value.problems == [
        'grids[0]: lead "T1" (township) must be of a higher tier than "CH" (county)',
        'grids[0]: grid cycle "CH" -> "T1" -> "CH" (each -> its lead)',
    ]
