"""The demo consortium: enough of a real one to follow the README from send to report.

It is an ordinary consortium definition (``demo_consortium.toml`` beside this module), loaded
through the same loader as ``telehub consortium load``.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from sqlalchemy import select

from telehub import consortium
from telehub.auth import hash_password
from telehub.db import Database
from telehub.db.models import Facility

DEMO_PASSWORD = "demo"
DEMO_FILE = "demo_consortium.toml"


def definition() -> dict[str, Any]:
    """The demo consortium definition, as parsed from the packaged TOML file."""
    text = resources.files("telehub").joinpath(DEMO_FILE).read_text(encoding="utf-8")
    return consortium.parse_toml(text)


def seed_demo(db: Database) -> bool:
    """Create the demo consortium unless it exists; returns True when it was created."""
    with db.session() as session:
        if session.scalar(select(Facility.id).where(Facility.code == "PH")) is not None:
            return False
        # Every demo account has the same password: hash it once, not once per account.
        consortium.apply_definition(
            session,
            definition(),
            actor_id=None,
            remote="demo",
            hasher=functools.cache(hash_password),
            password_policy=None,  # exempt: every demo account uses "demo" (docs/security.md)
        )
        return True


def banner(http_url: str, dicom_port: int, ae_title: str) -> str:
    lines = [
        "telehub demo consortium",
        f"  web and API : {http_url}   (API under {http_url}/api/v1)",
        f"  DICOM       : port {dicom_port}, called AE title {ae_title}",
        f"  accounts (password '{DEMO_PASSWORD}'):",
    ]
    lines += [
        f"    {u['username']:<10} {u['role']:<7} {u.get('display_name', '')}"
        for u in definition()["users"]
    ]
    lines.append(
        f"  send a study as township centre 1: telehub send --aet CLINIC1 --port {dicom_port} PATH"
    )
    return "\n".join(lines)
