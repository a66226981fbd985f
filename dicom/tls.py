"""DICOM TLS (PS3.15 Annex B, BCP 195 profile): SSL contexts for the SCP and for our SCU.

TLS 1.2 or newer only, with the ``ssl`` module's default (secure) cipher suites. The SCP's
context is built from the settings; when a CA is configured, clients must present a
certificate that chains to it (the consortium issues one per facility), which is checked
before the A-ASSOCIATE-RQ is even read. The calling AE title check still applies on top.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from telehub.config import ConfigError, Settings

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The SCP's context, or None when no certificate is configured (plain TCP)."""
    if not settings.dicom_tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        context.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key or None)
        if settings.dicom_tls_ca:
            context.load_verify_locations(cafile=settings.dicom_tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"DICOM TLS: cannot load certificate, key or CA: {exc}") from exc
    return context


def client_context(
    ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> ssl.SSLContext:
    """A context for our SCU: verifies the hub against ``ca`` (the system's CAs when None) and
    its host name, and presents ``cert``/``key`` when the hub asks for a client certificate."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    context.minimum_version = MINIMUM_VERSION
    if cert:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context
