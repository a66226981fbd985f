"""Celery workers: thin, idempotent tasks that call the telehub services."""
