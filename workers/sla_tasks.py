"""Periodic SLA work: warnings, breaches and escalation of unclaimed cases (placeholder)."""

from __future__ import annotations

from workers.app import app


@app.task(name="telehub.sla_sweep")
def sla_sweep() -> None:
    """Placeholder until the SLA work lands."""
