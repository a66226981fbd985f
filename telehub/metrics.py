"""Prometheus metrics, read from the database at scrape time.

The hub runs as several processes (receivers, HTTP, workers, and in the scaled mode several
machines); counters kept in memory would each see a part and reset on restart. The database
sees everything, so every hub process answers ``/metrics`` with the same consortium-wide
figures, cached for a few seconds so frequent scrapes cost little.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import timedelta

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from telehub.db import Database
from telehub.db.models import (
    Case,
    CaseEvent,
    EcgRecord,
    Instance,
    OutboxMessage,
    WebhookDelivery,
)
from telehub.db.types import utcnow
from telehub.timeline import Event

CACHE_SECONDS = 10.0
#: Turnaround buckets (s): 5 and 15 min, 30 min (STAT target), 1 and 2 h (urgent), 4, 8, 24 h
#: (routine), 2 days.
TAT_BUCKETS = (300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800)
#: The turnaround histogram covers the cases signed in this window.
TAT_WINDOW = timedelta(hours=24)


class DatabaseCollector(Collector):
    """Ingest counts and bytes, queue depth, open cases, SLA breaches, turnaround."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cached: list[Metric] = []
        self._at = 0.0
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._at > CACHE_SECONDS:
                self._cached = self._read()
                self._at = time.monotonic()
            return list(self._cached)

    def _read(self) -> list[Metric]:
        with self.db.reader() as session:
            protocol = case(
                (Instance.source.like("dimse:%"), "dimse"),
                (Instance.source.like("stow:%"), "stow"),
                else_="other",
            )
            received = CounterMetricFamily(
                "telehub_instances_received", "DICOM instances stored", labels=["protocol"]
            )
            stored_bytes = CounterMetricFamily(
                "telehub_instance_bytes_received", "Bytes of DICOM stored", labels=["protocol"]
            )
            for proto, count, size in session.execute(
                select(protocol, func.count(), func.coalesce(func.sum(Instance.size), 0)).group_by(
                    protocol
                )
            ):
                received.add_metric([proto], count)
                stored_bytes.add_metric([proto], int(size))
            ecgs = CounterMetricFamily("telehub_ecg_records_received", "ECG records stored")
            ecgs.add_metric([], session.scalar(select(func.count()).select_from(EcgRecord)) or 0)

            pending, oldest = session.execute(
                select(func.count(), func.min(OutboxMessage.created_at)).where(
                    OutboxMessage.done_at.is_(None)
                )
            ).one()
            queue = GaugeMetricFamily(
                "telehub_queue_depth", "Outbox messages not yet done (work waiting for workers)"
            )
            queue.add_metric([], pending)
            age = GaugeMetricFamily(
                "telehub_queue_oldest_age_seconds", "Age of the oldest unfinished outbox message"
            )
            age.add_metric([], (utcnow() - oldest).total_seconds() if oldest else 0.0)

            cases = GaugeMetricFamily(
                "telehub_cases", "Cases by status and priority", labels=["status", "priority"]
            )
            for status, priority, count in session.execute(
                select(Case.status, Case.priority, func.count()).group_by(
                    Case.status, Case.priority
                )
            ):
                cases.add_metric([status, priority], count)

            breaches = CounterMetricFamily(
                "telehub_sla_breaches", "Cases that passed their SLA deadline", labels=["priority"]
            )
            for priority, count in session.execute(
                select(Case.priority, func.count())
                .where(Case.sla_breached_at.is_not(None))
                .group_by(Case.priority)
            ):
                breaches.add_metric([priority], count)

            deliveries = GaugeMetricFamily(
                "telehub_webhook_deliveries", "Webhook deliveries by status", labels=["status"]
            )
            for status, count in session.execute(
                select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
            ):
                deliveries.add_metric([status], count)

            tat = self._turnaround(session)
        return [received, stored_bytes, ecgs, queue, age, cases, breaches, deliveries, tat]

    def _turnaround(self, session) -> HistogramMetricFamily:  # type: ignore[no-untyped-def]
        """Complete to final report, for the cases signed within TAT_WINDOW, by priority."""
        since = utcnow() - TAT_WINDOW
        # A case has one final report, so the window filters rows (index on kind, at), and
        # only those cases' completions are read, not the whole history's.
        final = (
            select(CaseEvent.case_id, func.min(CaseEvent.at).label("at"))
            .where(CaseEvent.kind == Event.REPORT_FINAL, CaseEvent.at >= since)
            .group_by(CaseEvent.case_id)
            .subquery()
        )
        complete = (
            select(CaseEvent.case_id, func.min(CaseEvent.at).label("at"))
            .where(
                CaseEvent.kind == Event.STUDY_COMPLETE,
                CaseEvent.case_id.in_(select(final.c.case_id)),
            )
            .group_by(CaseEvent.case_id)
            .subquery()
        )
        rows = session.execute(
            select(Case.priority, complete.c.at, final.c.at)
            .join(complete, complete.c.case_id == Case.id)
            .join(final, final.c.case_id == Case.id)
        )
        by_priority: dict[str, list[float]] = {}
        for priority, started, signed in rows:
            by_priority.setdefault(priority, []).append((signed - started).total_seconds())
        histogram = HistogramMetricFamily(
            "telehub_report_turnaround_seconds",
            f"Study complete to final report, cases signed in the last "
            f"{TAT_WINDOW.total_seconds() / 3600:g} h",
            labels=["priority"],
        )
        for priority, values in sorted(by_priority.items()):
            buckets = [(str(b), sum(v <= b for v in values)) for b in TAT_BUCKETS]
            buckets.append(("+Inf", len(values)))
            histogram.add_metric([priority], buckets, sum(values))
        return histogram
