"""Errors the services raise; each protocol adapter maps them to its own terms."""

from __future__ import annotations


class TelehubError(Exception):
    """Base: ``code`` is a stable machine-readable word, the message is for people."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class Invalid(TelehubError):
    code = "invalid"
    http_status = 400


class Unauthorized(TelehubError):
    code = "unauthorized"
    http_status = 401


class Forbidden(TelehubError):
    code = "forbidden"
    http_status = 403


class NotFound(TelehubError):
    code = "not_found"
    http_status = 404


class Conflict(TelehubError):
    code = "conflict"
    http_status = 409


class TooLarge(TelehubError):
    code = "too_large"
    http_status = 413


class UnsupportedMediaType(TelehubError):
    code = "unsupported_media_type"
    http_status = 415
