"""Assignment work: push new cases to readers, expire idle leases (placeholder)."""

from __future__ import annotations

from workers.app import app


@app.task(name="telehub.expire_leases")
def expire_leases() -> None:
    """Placeholder until the assignment work lands."""
