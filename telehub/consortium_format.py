"""The consortium definition's format: its sections, the fields of each entry with their
checks and defaults, and reading a definition (TOML table or JSON object) into checked entries.

A field check takes the value as given and returns it normalised (modality codes upper case,
subspecialties lower case, as routing compares them), or raises ValueError("must ...").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from telehub import service_hours
from telehub.db.models import CaseKind, Priority, Role, Service, Tier
from telehub.facilities import parse_networks

SECTIONS = ("facilities", "grids", "centres", "links", "users", "rules")
#: Sections that are rows (grids only set Facility.parent_id), in the order they are applied.
ENTITIES = ("facilities", "centres", "links", "users", "rules")
SINGULAR = {
    "facilities": "facility",
    "grids": "grid",
    "centres": "centre",
    "links": "link",
    "users": "user",
    "rules": "rule",
}
TIER_RANK = {Tier.VILLAGE: 0, Tier.TOWNSHIP: 1, Tier.COUNTY: 2, Tier.TERTIARY: 3}
DEFAULT_TIMEZONE = "Asia/Shanghai"
#: DICOM Modality (0008,0060) defined terms, PS3.3 C.7.3.1.1.1 (current ones plus CR/DX).
DICOM_MODALITIES = frozenset(
    """ANN AR ASMT AU BDUS BI BMD CFM CR CT CTPROTOCOL DMS DOC DX ECG EEG EMG EOG EPS ES FID GM HC
    HD IO IOL IVOCT IVUS KER KO LEN LS M3D MG MR NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PA
    PLAN POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN
    RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XAPROTOCOL XC""".split()  # noqa: SIM905
)
ECG_MODALITY = "ECG"
#: PS3.5 AE title, as dicom.nodes checks it (not imported: that module brings telehub.auth).
_AE_RE = re.compile(r"^[\x21-\x5b\x5d-\x7e](?:[\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")


# ----- field checks ----------------------------------------------------------------------------
Check = Callable[[Any], Any]


def _text(max_len: int, required: bool = False) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        value = value.strip()
        if required and not value:
            raise ValueError("must not be empty")
        if len(value) > max_len:
            raise ValueError(f"must be at most {max_len} characters")
        return value

    return check


def _optional(check: Check) -> Check:
    """``""`` or null mean none (TOML has no null)."""

    def wrapped(value: Any) -> Any:
        return None if value is None or value == "" else check(value)

    return wrapped


def _choice(values: Iterable[str]) -> Check:
    allowed = tuple(values)

    def check(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value.strip().lower()

    return check


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


def _cap(value: Any) -> int | None:
    """A per-reader cap: a positive integer; 0 or null for none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be a positive integer (0 for no cap)")
    return value or None


def _list(item: Check) -> Check:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValueError("must be a list")
        out: list[Any] = []
        for one in value:
            normal = item(one)
            if normal not in out:
                out.append(normal)
        return out

    return check


def _upper(value: Any) -> str:
    return _text(64, required=True)(value).upper()


def _lower(value: Any) -> str:
    return _text(64, required=True)(value).lower()


def _modality(value: Any) -> str:
    code = _upper(value)
    if code not in DICOM_MODALITIES:
        raise ValueError(f'has "{code}", which is not a DICOM modality code')
    return code


def _qualification(value: Any) -> str:
    """Modality codes (and ECG) upper case, subspecialties lower case, as routing compares."""
    text = _text(64, required=True)(value)
    return text.upper() if text.upper() in DICOM_MODALITIES else text.lower()


def _ae_title(value: Any) -> str:
    if not isinstance(value, str) or not _AE_RE.match(value):
        raise ValueError(
            "must be 1-16 printable ASCII characters, no backslash, no leading or trailing space"
        )
    return value


def _networks(value: Any) -> str:
    text = _text(500)(value)
    try:
        parse_networks(text)
    except ValueError as exc:
        raise ValueError(f"is not a list of addresses or networks: {exc}") from exc
    return text


def _hours(value: Any) -> str:
    text = _text(200)(value)
    try:
        service_hours.validate(text)
    except ValueError as exc:
        raise ValueError(f"are not valid: {exc}") from exc
    return text


def _timezone(value: Any) -> str:
    text = _text(64, required=True)(value)
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f'"{text}" is not a known time zone (e.g. Asia/Shanghai)') from exc
    return text


def _password_hash(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("$argon2"):
        raise ValueError("must be an argon2 hash ($argon2id$...)")
    return value


@dataclass(frozen=True)
class Spec:
    """One section: its key field, field checks, and defaults of a new entry (a field without a
    default is required for a new entry). ``secret`` fields are taken, never stored as given."""

    key: str
    checks: dict[str, Check]
    defaults: dict[str, Any]
    secret: frozenset[str] = frozenset()

    @property
    def required(self) -> list[str]:
        return [f for f in self.checks if f not in self.defaults and f not in self.secret]


_CODE = _text(32, required=True)
SPECS: dict[str, Spec] = {
    "facilities": Spec(
        "code",
        {
            "code": _CODE,
            "name": _text(200, required=True),
            "tier": _choice(Tier),
            "ae_title": _optional(_ae_title),
            "dicom_networks": _networks,
            "parent": _optional(_CODE),
        },
        {"ae_title": None, "dicom_networks": "", "parent": None},
    ),
    "grids": Spec("lead", {"lead": _CODE, "covers": _list(_CODE)}, {}),
    "centres": Spec(
        "code",
        {
            "code": _CODE,
            "facility": _CODE,
            "service": _choice(Service),
            "name": _text(200, required=True),
            "modalities": _list(_modality),
            "subspecialties": _list(_lower),
            "service_hours": _hours,
            "timezone": _timezone,
        },
        {"modalities": [], "subspecialties": [], "service_hours": "", "timezone": DEFAULT_TIMEZONE},
    ),
    "links": Spec(
        "origin",
        {"origin": _CODE, "centre": _CODE, "modality": _optional(_modality)},
        {"modality": None},
    ),
    "users": Spec(
        "username",
        {
            "username": _text(64, required=True),
            "display_name": _text(200),
            "role": _choice(Role),
            "facility": _CODE,
            "centre": _optional(_CODE),
            "qualifications": _list(_qualification),
            "may_sign_final": _flag,
            "max_open_cases": _cap,
            "on_duty": _flag,
            "active": _flag,
            "password": _text(200, required=True),
            "password_hash": _password_hash,
        },
        {
            "display_name": "",
            "centre": None,
            "qualifications": [],
            "may_sign_final": True,
            "max_open_cases": None,
            # As the model: off until the reader (or an admin) turns it on (push assignment).
            "on_duty": False,
            "active": True,
        },
        secret=frozenset({"password", "password_hash"}),
    ),
    "rules": Spec(
        "name",
        {
            "name": _text(100, required=True),
            "position": _integer,
            "enabled": _flag,
            "kinds": _list(_choice(CaseKind)),
            "modalities": _list(_modality),
            "body_parts": _list(_upper),
            "subspecialties": _list(_lower),
            "priorities": _list(_choice(Priority)),
            "origins": _list(_CODE),
            "origin_tiers": _list(_choice(Tier)),
            "centre": _CODE,
        },
        {
            "position": 100,
            "enabled": True,
            "kinds": [],
            "modalities": [],
            "body_parts": [],
            "subspecialties": [],
            "priorities": [],
            "origins": [],
            "origin_tiers": [],
        },
    ),
}


def link_key(entry: dict[str, Any]) -> tuple[str, str, str | None]:
    return entry["origin"], entry["centre"], entry.get("modality")


def show_key(section: str, key: Any) -> str:
    if section == "links":
        origin, centre, modality = key
        return f'"{origin}" -> "{centre}"' + (f" ({modality})" if modality else "")
    return f'"{key}"'


@dataclass
class Entry:
    """One entry of a definition as read: where it is, its checked fields, and the fields that
    failed their check (left out of ``fields``; already reported)."""

    label: str
    fields: dict[str, Any]
    bad: set[str]


#: A problem as (label of the entry it is about, text); "" for the definition as a whole.
Error = tuple[str, str]


def read_sections(definition: Any, errors: list[Error], single: bool) -> dict[str, list[Entry]]:
    """Each section's entries, checked field by field; shape errors go to ``errors``.
    ``single``: label entries by name only (an admin API call names one entity)."""
    out: dict[str, list[Entry]] = {s: [] for s in SECTIONS}
    if not isinstance(definition, dict):
        errors.append(("", "the definition must be a table (a JSON object)"))
        return out
    for name in definition:
        if name not in SECTIONS:
            errors.append(("", f'unknown section "{name}" (sections: {", ".join(SECTIONS)})'))
    for section in SECTIONS:
        entries = definition.get(section, [])
        if not isinstance(entries, list):
            errors.append(("", f"{section} must be an array of tables ([[{section}]])"))
            continue
        spec = SPECS[section]
        for i, raw in enumerate(entries):
            label = f"{section}[{i}]"
            if not isinstance(raw, dict):
                errors.append((label, "must be a table"))
                continue
            key = raw.get(spec.key)
            if isinstance(key, str) and section not in ("links", "grids"):
                label = f'{SINGULAR[section]} "{key}"' if single else f'{label} "{key}"'
            elif single:
                label = SINGULAR[section]
            entry = Entry(label, {}, set())
            for name, value in raw.items():
                check = spec.checks.get(name)
                if check is None:
                    errors.append((label, f'unknown key "{name}"'))
                    continue
                try:
                    entry.fields[name] = check(value)
                except ValueError as exc:
                    errors.append((label, f"{name.replace('_', ' ')} {exc}"))
                    entry.bad.add(name)
            out[section].append(entry)
    return out
