"""The Celery app. Its broker comes from the settings: a folder in the data directory by default
(no server to install), Redis or RabbitMQ in the scaled mode."""

from __future__ import annotations

from typing import Any

from celery import Celery

from telehub.config import Settings

QUEUE = "telehub"

app = Celery(
    "telehub",
    include=[
        "workers.tasks",
        "workers.sla_tasks",
        "workers.assignment_tasks",
        "workers.report_tasks",
        "workers.notify_tasks",
    ],
)
_settings: Settings | None = None


def configure(settings: Settings) -> Celery:
    """Point the app at the settings' broker; call once per process before use."""
    global _settings
    _settings = settings
    conf: dict[str, Any] = {
        "broker_url": settings.resolved_broker_url,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": QUEUE,
        "task_ignore_result": True,
        # A task is acknowledged after it ran, and re-queued if its worker dies mid-way;
        # tasks are idempotent, so running one again is safe.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_transport": None,  # the URL's scheme decides, except for the folder broker
        # Periodic checks (run by ``telehub beat`` or a worker started with --beat); each
        # task is idempotent, so a late or doubled tick is harmless.
        "beat_schedule": {
            "sla-sweep": {"task": "telehub.sla_sweep", "schedule": settings.sla_check_seconds},
            "recovery-sweep": {
                "task": "telehub.recovery_sweep",
                "schedule": max(1.0, settings.abandoned_study_seconds / 2),
            },
            # Lists the whole bucket: hourly by default (the grace), at most once a minute.
            "orphan-sweep": {
                "task": "telehub.orphan_sweep",
                "schedule": max(60.0, settings.orphan_grace_seconds),
            },
            "lease-sweep": {
                "task": "telehub.expire_leases",
                "schedule": min(settings.sla_check_seconds, settings.claim_lease_seconds / 4),
            },
        },
        "timezone": "UTC",
    }
    if settings.resolved_broker_url.startswith("filesystem://"):
        folder = settings.broker_folder
        for sub in ("queue", "control", "processed"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "polling_interval": 0.05,
        }
        conf["worker_enable_remote_control"] = False
        conf["broker_transport"] = "workers.fs_broker:Transport"
    app.conf.update(conf)
    # Drop connections made under an earlier configuration, so a second configure() (tests,
    # an embedding program) really switches brokers.
    app._pool = None
    app.amqp._producer_pool = None
    return app


def settings() -> Settings:
    """The settings this process was configured with (or, in a bare worker, the environment)."""
    if _settings is None:
        configure(Settings.load())
    assert _settings is not None
    return _settings


def publish(task: str, kwargs: dict[str, Any]) -> None:
    """Send a task by name; raises if the broker does not take it within a few seconds."""
    app.send_task(
        task,
        kwargs=kwargs,
        queue=QUEUE,
        retry=True,
        retry_policy={
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
    )
