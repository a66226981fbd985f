"""The HTTP API under /api/v1: one module per resource, each a thin adapter over a service."""
