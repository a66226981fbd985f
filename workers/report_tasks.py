"""Placeholder: tasks of this part are added by its issue-5 work."""

from __future__ import annotations
