"""Query parameters shared by the HTTP handlers and the services that take raw query mappings:
one parser, one error ("bad_parameter" naming the parameter and its range)."""

from __future__ import annotations

from collections.abc import Mapping

from telehub.errors import Invalid


def bounded_int(
    params: Mapping[str, str], name: str, default: int | None, lo: int, hi: int
) -> int | None:
    """``params[name]`` as an integer in [lo, hi]; ``default`` when absent or empty."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise Invalid(f"query parameter {name} must be an integer", "bad_parameter") from exc
    if not lo <= value <= hi:
        raise Invalid(f"query parameter {name} must be between {lo} and {hi}", "bad_parameter")
    return value
