"""Reading centres' service hours ("mon-fri 08:00-17:30; sat 08:00-12:00"): parsing and
"is it open now" (placeholder until the consortium work lands: always open)."""

from __future__ import annotations

from datetime import datetime


def validate(text: str) -> None:
    """Raise ValueError with a specific message when ``text`` is not valid service hours."""


def is_open(text: str, timezone: str, at: datetime) -> bool:
    """Whether a centre with these hours is open at ``at`` (aware datetime); empty: always."""
    return True
