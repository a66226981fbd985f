"""The demo consortium: enough of a real one to follow the README from send to report."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from telehub.auth import hash_password
from telehub.db import Database
from telehub.db.models import Facility, ReadingCentre, ReadingLink, Role, Service, Tier, User

DEMO_PASSWORD = "demo"


@dataclass(frozen=True)
class DemoAccount:
    username: str
    role: Role
    facility: str
    centre: Service | None
    display_name: str
    qualifications: tuple[str, ...] = ()
    may_sign_final: bool = True


FACILITIES = (
    # code, name, tier, parent code, calling AE title
    ("PH", "省人民医院 Provincial People's Hospital", Tier.TERTIARY, None, None),
    ("CH", "县人民医院 County People's Hospital", Tier.COUNTY, "PH", "COUNTYHOSP"),
    ("T1", "城关镇卫生院 Chengguan Township Health Centre", Tier.TOWNSHIP, "CH", "CLINIC1"),
    ("T2", "河西乡卫生院 Hexi Township Health Centre", Tier.TOWNSHIP, "CH", "CLINIC2"),
)
CENTRES = (
    # facility, service, name, subspecialties
    ("PH", Service.IMAGING, "省人民医院影像中心 Provincial Imaging Centre", ("neuro", "msk")),
    ("PH", Service.ECG, "省人民医院心电中心 Provincial ECG Centre", ()),
    ("CH", Service.IMAGING, "县影像中心 County Imaging Centre", ()),
    ("CH", Service.ECG, "县心电中心 County ECG Centre", ()),
)
#: origin facility -> lead facility whose centres read for it
LINKS = (("T1", "CH"), ("T2", "CH"), ("CH", "PH"))
ACCOUNTS = (
    DemoAccount("admin", Role.ADMIN, "CH", None, "系统管理员 Administrator"),
    DemoAccount("reader", Role.READER, "CH", Service.IMAGING, "李医生 Dr Li (county radiologist)"),
    DemoAccount(
        "reader2", Role.READER, "CH", Service.IMAGING, "周医生 Dr Zhou (county radiologist)"
    ),
    DemoAccount(
        "resident",
        Role.READER,
        "CH",
        Service.IMAGING,
        "孙医生 Dr Sun (county resident, preliminary reports only)",
        qualifications=("CR", "DX", "CT"),
        may_sign_final=False,
    ),
    DemoAccount("ecgreader", Role.READER, "CH", Service.ECG, "王医生 Dr Wang (county ECG reader)"),
    DemoAccount(
        "expert",
        Role.READER,
        "PH",
        Service.IMAGING,
        "陈教授 Prof Chen (provincial neuroradiologist)",
        qualifications=("CT", "MR", "CR", "DX", "neuro"),
    ),
    DemoAccount(
        "ecgexpert", Role.READER, "PH", Service.ECG, "吴教授 Prof Wu (provincial cardiologist)"
    ),
    DemoAccount("clinic", Role.CLINIC, "T1", None, "张医生 Dr Zhang (Chengguan clinic)"),
    DemoAccount("clinic2", Role.CLINIC, "T2", None, "赵医生 Dr Zhao (Hexi clinic)"),
)


def seed_demo(db: Database) -> bool:
    """Create the demo consortium unless it exists; returns True when it was created."""
    with db.session() as session:
        if session.scalar(select(Facility.id).where(Facility.code == "PH")) is not None:
            return False
        facilities: dict[str, Facility] = {}
        for code, name, tier, parent, aet in FACILITIES:
            fac = Facility(
                code=code,
                name=name,
                tier=tier.value,
                ae_title=aet,
                parent_id=facilities[parent].id if parent else None,
            )
            session.add(fac)
            session.flush()
            facilities[code] = fac
        centres: dict[tuple[str, Service], ReadingCentre] = {}
        for code, service, name, subspecialties in CENTRES:
            centre = ReadingCentre(
                code=f"{code}-{service.value.upper()}",
                facility_id=facilities[code].id,
                service=service.value,
                name=name,
                modalities=[],
                subspecialties=list(subspecialties),
            )
            session.add(centre)
            session.flush()
            centres[code, service] = centre
        for origin, lead in LINKS:
            for service in Service:
                session.add(
                    ReadingLink(
                        origin_facility_id=facilities[origin].id,
                        centre_id=centres[lead, service].id,
                    )
                )
        password_hash = hash_password(DEMO_PASSWORD)
        for acct in ACCOUNTS:
            session.add(
                User(
                    username=acct.username,
                    display_name=acct.display_name,
                    password_hash=password_hash,
                    role=acct.role.value,
                    facility_id=facilities[acct.facility].id,
                    centre_id=centres[acct.facility, acct.centre].id if acct.centre else None,
                    qualifications=list(acct.qualifications),
                    may_sign_final=acct.may_sign_final,
                )
            )
        return True


def banner(http_url: str, dicom_port: int, ae_title: str) -> str:
    lines = [
        "telehub demo consortium",
        f"  web and API : {http_url}   (API under {http_url}/api/v1)",
        f"  DICOM       : port {dicom_port}, called AE title {ae_title}",
        f"  accounts (password '{DEMO_PASSWORD}'):",
    ]
    lines += [f"    {a.username:<10} {a.role.value:<7} {a.display_name}" for a in ACCOUNTS]
    lines.append(
        f"  send a study as township centre 1: telehub send --aet CLINIC1 --port {dicom_port} PATH"
    )
    return "\n".join(lines)
