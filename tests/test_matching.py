"""The DICOM matching rules C-FIND and QIDO-RS share (dicom.matching): values refused before any
SQL runs, and what the clauses select on a real database (SQLite and PostgreSQL), directly and
through each protocol's parser, so both answer a matching key alike."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from multidict import MultiDict
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select, true

from dicom import matching, qr_query
from dicom.matching import MatchError
from dicom.web import qido
from telehub.db import Database
from telehub.db.models import Case, Facility, Patient, Series, Study
from telehub.errors import Invalid


# ----- values refused ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("date", "20240230"),  # no such day
        ("date", "2024-01-01"),  # two dashes: not a range
        ("date", "2024"),
        ("date", "-"),
        ("date", "20240201-20240101"),  # ends before it starts
        ("time", "2400"),
        ("time", "1260"),  # minute 60
        ("time", "123061"),  # second 61 (60 is a leap second)
        ("time", "12:30"),
        ("time", "1230.5"),  # a fraction needs seconds
        ("time", "1100-1000"),
        ("time", "110000.5-110000.4"),
        ("uid", "1.2.*"),  # no wildcards in UIDs
        ("uid", "1..2"),
        ("uid", "1." + "2" * 70),
        ("int", "1_000"),  # Python's int() would take it
        ("int", "12x"),
        ("int", str(2**31)),
    ],
)
def test_values_breaking_the_rules_are_refused(kind: matching.Kind, value: str) -> None:
    with pytest.raises(MatchError, match="StudyX"):
        matching.condition(kind, Study.study_date, [value], "StudyX")


@pytest.mark.parametrize(
    "value", ["1000-10", "10-1000", "1015-1015", "1015", "110000.5-110000.5", "235960"]
)
def test_time_ranges_compare_what_the_bounds_denote(value: str) -> None:
    """ "1000-10" is 10:00 to 10:59:59.999999, not refused because "1000" sorts after "10"."""
    assert matching.condition("time", Study.study_time, [value], "StudyTime") is not None


@pytest.mark.parametrize("kind", ["uid", "text", "pn", "date", "time", "int", "modalities"])
def test_star_alone_or_nothing_is_universal(kind: matching.Kind) -> None:
    for values in (["*"], ["**"], [""], [" "], [], ["1.2.3", "*"]):
        assert matching.condition(kind, Study.study_date, values, "X") is None


def test_each_protocol_maps_a_match_error_to_its_own() -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyTime = "2500"
    with pytest.raises(qr_query.QueryError) as refused:
        qr_query.build_find(identifier, False, true())
    assert refused.value.status == qr_query.UNABLE_TO_PROCESS == 0xC000
    with pytest.raises(Invalid) as invalid:
        qido.parse_query(MultiDict({"StudyInstanceUID": "1.2.3,not-a-uid"}), qido.STUDY)
    assert invalid.value.code == "bad_parameter" and "not-a-uid" in invalid.value.message


# ----- on the database -----------------------------------------------------------------------
def _study(
    db: Database, name: str, date: str, time: str, description: str, modalities: list[str]
) -> tuple[str, list[str]]:
    """One study of a new patient and case, a series per modality; its UID and series UIDs."""
    with db.session() as session:
        facility = session.scalars(select(Facility).order_by(Facility.id)).first()
        assert facility is not None
        patient = Patient(issuer="TEST", patient_id=generate_uid()[-16:], name=name)
        session.add(patient)
        session.flush()
        case = Case(origin_facility_id=facility.id, patient_id=patient.id, kind="imaging")
        session.add(case)
        session.flush()
        study = Study(
            study_uid=generate_uid(),
            case_id=case.id,
            patient_id=patient.id,
            study_date=date,
            study_time=time,
            description=description,
            modalities="\\".join(modalities),
        )
        session.add(study)
        session.flush()
        series = [
            Series(series_uid=generate_uid(), study_id=study.id, modality=m, series_number=n)
            for n, m in enumerate(modalities, start=1)
        ]
        session.add_all(series)
        return study.study_uid, [s.series_uid for s in series]


@pytest.fixture
def studies(db: Database) -> dict[str, str]:
    made = {
        "wang": _study(db, "Wang^Fang=王^芳", "20240105", "101500", "100%_done", ["CT", "MR"]),
        "li": _study(db, "Li^Si", "20240220", "103000.5", "100x_done", ["CR", "MR", "OT"]),
        "zhao": _study(db, "Zhao^Lei", "", "110000.500000", "a!b", ["XA"]),
        "none": _study(db, "", "20231231", "", "", ["US"]),
    }
    return {key: uid for key, (uid, _) in made.items()}


def _studies(db: Database, clause: Any, uids: dict[str, str]) -> set[str]:
    names = {uid: key for key, uid in uids.items()}
    statement = select(Study.study_uid).outerjoin(Patient, Patient.id == Study.patient_id)
    if clause is not None:
        statement = statement.where(clause)
    with db.reader() as session:
        return {names[u] for u in session.scalars(statement) if u in names}


def _match(
    db: Database, uids: dict[str, str], kind: matching.Kind, column: Any, *v: str
) -> set[str]:
    return _studies(db, matching.condition(kind, column, v, "Key"), uids)


def test_wildcards_names_dates_and_times(db: Database, studies: dict[str, str]) -> None:
    def desc(*values: str) -> set[str]:
        return _match(db, studies, "text", Study.description, *values)

    # The value's own % _ ! are literal; only * and ? are wildcards.
    assert desc("100%*") == {"wang"}
    assert desc("*%_*") == {"wang"}
    assert desc("*x_*") == {"li"}
    assert desc("100?_done") == {"wang", "li"}  # ? is any one character
    assert desc("100_done") == set()
    assert desc("a!*") == {"zhao"}
    assert desc("100%_done", "a!b") == {"wang", "zhao"}  # a list: any of the values

    def name(*values: str) -> set[str]:
        return _match(db, studies, "pn", Patient.name, *values)

    assert name("wang^fang") == {"wang"}  # any name group, any case
    assert name("王^芳") == {"wang"}
    assert name("王*") == {"wang"}
    assert name("WANG^FANG=王^芳") == {"wang"}
    assert name("fang") == set()
    assert name("*") == set(studies)  # universal: the empty name too
    assert name("?i^si") == {"li"}

    def date(value: str) -> set[str]:
        return _match(db, studies, "date", Study.study_date, value)

    assert date("20240105") == {"wang"}
    assert date("20240101-20240131") == {"wang"}
    assert date("20240106-") == {"li"}  # an open range leaves out the empty date
    assert date("-20240105") == {"wang", "none"}

    def time(value: str) -> set[str]:
        return _match(db, studies, "time", Study.study_time, value)

    assert time("1015") == {"wang"}  # 10:15:00 to 10:15:59.999999
    assert time("10") == {"wang", "li"}
    assert time("101500") == {"wang"}
    assert time("1030-1059") == {"li"}
    assert time("1030-1100") == {"li", "zhao"}  # "1100" runs to 11:00:59.999999 ...
    assert time("-110000.5") == {"wang", "li", "zhao"}  # ... a fraction is exact
    assert time("-110000.4") == {"wang", "li"}
    assert time("1100-") == {"zhao"}


def test_uids_integers_and_modalities_in_study(db: Database, studies: dict[str, str]) -> None:
    assert _match(db, studies, "uid", Study.study_uid, studies["li"], studies["zhao"]) == {
        "li",
        "zhao",
    }
    mod = "modalities"
    assert _match(db, studies, mod, None, "MR") == {"wang", "li"}
    assert _match(db, studies, mod, None, "XA", "US") == {"zhao", "none"}
    assert _match(db, studies, mod, None, "M?") == {"wang", "li"}
    # Each modality on its own: "C*T" is not "CR" and "OT" of one study run together.
    assert _match(db, studies, mod, None, "C*T") == {"wang"}

    with db.reader() as session:
        numbers = session.scalars(
            select(Series.series_number)
            .join(Study, Study.id == Series.study_id)
            .where(
                Study.study_uid == studies["li"],
                matching.condition("int", Series.series_number, ["+2"], "SeriesNumber"),
            )
        ).all()
    assert numbers == [2]


def _series(db: Database, conditions: Iterable[Any]) -> set[str]:
    statement = (
        select(Series.series_uid)
        .join(Study, Study.id == Series.study_id)
        .outerjoin(Patient, Patient.id == Study.patient_id)
        .where(*conditions)
    )
    with db.reader() as session:
        return set(session.scalars(statement))


def test_both_protocols_answer_alike(db: Database) -> None:
    """The same keys through C-FIND's identifier and QIDO-RS's query string, at series level,
    where ModalitiesInStudy still asks about the study's series, not the one returned."""
    study, (ct, mr) = _study(db, "Wang^Fang=王^芳", "20240105", "101500", "", ["CT", "MR"])
    _study(db, "Wang^Fang", "20240105", "121500", "", ["CT"])

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.SpecificCharacterSet = "ISO_IR 192"
    identifier.PatientName = "王^芳"
    identifier.StudyTime = "10"
    identifier.ModalitiesInStudy = "MR"
    identifier.SeriesInstanceUID = ""
    find = qr_query.build_find(identifier, False, true())
    with db.reader() as session:
        found = {row.SeriesInstanceUID for row in session.execute(find.statement)}

    params = {"PatientName": "王^芳", "StudyTime": "10", "ModalitiesInStudy": "MR"}
    query = qido.parse_query(MultiDict(params), qido.SERIES)
    assert found == _series(db, query.conditions) == {ct, mr}

    # A wildcard in a UID is no UID list: refused by both, not matched as text.
    identifier.StudyInstanceUID = study[:10] + "*"
    with pytest.raises(qr_query.QueryError):
        qr_query.build_find(identifier, False, true())
    with pytest.raises(Invalid):
        qido.parse_query(MultiDict({"StudyInstanceUID": study[:10] + "*"}), qido.SERIES)
