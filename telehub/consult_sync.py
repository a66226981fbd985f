"""Shared viewing in a consult: the presenter's view of a DICOM study or an ECG, mirrored to the
others, instead of a blurred screen share. Each side opens the same data in the hub's viewer
at full quality; only this small state travels (see docs/consults.md, "Shared viewing").

The state is validated field by field (a bad update changes nothing), kept per consult so a late
joiner starts from it, and pointer-only updates are coalesced to at most ``pointer_hz``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from telehub.errors import Invalid

UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

DICOM = "dicom"
ECG = "ecg"

#: Defaults of the optional fields, per mode.
DEFAULTS: dict[str, dict[str, Any]] = {
    DICOM: {
        "instance": 0,
        "window_center": None,
        "window_width": None,
        "zoom": 1.0,
        "pan": {"x": 0.0, "y": 0.0},
        "pointer": None,
    },
    ECG: {"offset": 0.0, "gain": 10.0, "speed": 25.0, "pointer": None},
}
#: Fields each mode must have once merged.
REQUIRED = {DICOM: ("study_uid", "series_uid"), ECG: ("ecg_id",)}


def _bad(name: str, rule: str) -> Invalid:
    return Invalid(f"sync: {name} {rule}", "invalid_sync")


def _number(value: Any, name: str, lo: float, hi: float, *, open_lo: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(name, "must be a number")
    if value < lo or value > hi or (open_lo and value == lo):
        raise _bad(name, f"must be in {'(' if open_lo else '['}{lo}, {hi}]")
    return float(value)


def _integer(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _bad(name, f"must be an integer in [{lo}, {hi}]")
    return value


def _uid(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > 64 or not UID.match(value):
        raise _bad(name, "must be a DICOM UID")
    return value


def _point(value: Any, name: str, lo: float, hi: float) -> dict[str, float] | None:
    if value is None and name == "pointer":
        return None
    if not isinstance(value, dict) or set(value) != {"x", "y"}:
        raise _bad(name, 'must be {"x": number, "y": number}')
    return {
        "x": _number(value["x"], f"{name}.x", lo, hi),
        "y": _number(value["y"], f"{name}.y", lo, hi),
    }


def _optional(value: Any, name: str, lo: float, hi: float, *, open_lo: bool = False) -> Any:
    return None if value is None else _number(value, name, lo, hi, open_lo=open_lo)


def validate(state: dict[str, Any]) -> dict[str, Any]:
    """A complete state, checked and normalised; Invalid ("invalid_sync") names the bad field."""
    mode = state.get("mode")
    if mode not in (DICOM, ECG):
        raise _bad("mode", "must be 'dicom' or 'ecg'")
    allowed = {"mode", *REQUIRED[mode], *DEFAULTS[mode]}
    unknown = sorted(set(state) - allowed)
    if unknown:
        raise _bad(", ".join(unknown), f"is not a field of a {mode} view")
    for name in REQUIRED[mode]:
        if name not in state:
            raise _bad(name, "is required")
    if mode == DICOM:
        return {
            "mode": DICOM,
            "study_uid": _uid(state["study_uid"], "study_uid"),
            "series_uid": _uid(state["series_uid"], "series_uid"),
            "instance": _integer(state["instance"], "instance", 0, 100_000),
            "window_center": _optional(state["window_center"], "window_center", -1e6, 1e6),
            "window_width": _optional(state["window_width"], "window_width", 0, 1e6, open_lo=True),
            "zoom": _number(state["zoom"], "zoom", 0.05, 64),
            "pan": _point(state["pan"], "pan", -10, 10),
            "pointer": _point(state["pointer"], "pointer", 0, 1),
        }
    return {
        "mode": ECG,
        "ecg_id": _integer(state["ecg_id"], "ecg_id", 1, 2**62),
        "offset": _number(state["offset"], "offset", 0, 86_400),
        "gain": _number(state["gain"], "gain", 0.5, 100),
        "speed": _number(state["speed"], "speed", 5, 200),
        "pointer": _point(state["pointer"], "pointer", 0, 1),
    }


def merge(current: dict[str, Any] | None, update: Any) -> dict[str, Any]:
    """An update applied to the current state: fields left out keep their values while the
    mode stays; a new mode starts from its defaults. The result is validated."""
    if not isinstance(update, dict):
        raise _bad("state", "must be an object")
    mode = update.get("mode", current["mode"] if current else None)
    if mode not in (DICOM, ECG):
        raise _bad("mode", "must be 'dicom' or 'ecg'")
    base = dict(current) if current and current["mode"] == mode else {**DEFAULTS[mode]}
    base.update(update)
    base["mode"] = mode
    return validate(base)


@dataclass
class Outcome:
    """What to do with an accepted update: send it now, or after ``delay`` seconds (coalesced
    pointer movement: the latest state is sent then)."""

    state: dict[str, Any]
    seq: int
    send_now: bool
    delay: float = 0.0


@dataclass
class SyncState:
    """One consult's shared view: the latest state, a sequence number, pointer throttling."""

    pointer_hz: float = 30.0
    state: dict[str, Any] | None = None
    seq: int = 0
    last_sent: float = field(default=-math.inf)
    pending: bool = False

    def update(self, update: Any, now: float) -> Outcome:
        """Apply an update (Invalid leaves the state as it was)."""
        new = merge(self.state, update)
        pointer_only = self.state is not None and {
            k for k in new if new[k] != self.state.get(k)
        } <= {"pointer"}
        self.state = new
        self.seq += 1
        interval = 1.0 / self.pointer_hz
        if pointer_only and now - self.last_sent < interval:
            self.pending = True
            return Outcome(new, self.seq, False, interval - (now - self.last_sent))
        self.sent(now)
        return Outcome(new, self.seq, True)

    def sent(self, now: float) -> None:
        self.last_sent = now
        self.pending = False
