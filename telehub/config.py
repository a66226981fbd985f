"""Settings: one object, from an optional TOML file overlaid by ``TELEHUB_*`` variables.

The defaults are the embedded mode (SQLite, a folder of objects, a broker in the data folder),
so ``telehub serve`` runs on a fresh machine; the scaled mode differs only in these values.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "TELEHUB_"


class ConfigError(ValueError):
    """A setting has a value the hub cannot run with."""


@dataclass(frozen=True)
class Settings:
    data: Path = Path("telehub-data")
    database_url: str = ""  # default: SQLite inside the data folder
    storage_url: str = ""  # default: the "objects" folder inside the data folder
    broker_url: str = ""  # default: a filesystem broker inside the data folder
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    dicom_host: str = "0.0.0.0"
    dicom_port: int = 11112
    ae_title: str = "TELEHUB"
    #: DICOM TLS: the SCP's certificate and key (PEM); when set, the DICOM port speaks TLS only.
    dicom_tls_cert: str = ""
    dicom_tls_key: str = ""
    #: CA bundle (PEM) that clients' certificates must chain to; empty: no client certificate.
    dicom_tls_ca: str = ""
    #: Character set for data sets without Specific Character Set (e.g. GB18030 for old Chinese
    #: equipment); empty means the standard's default repertoire (ISO-IR 6).
    dicom_default_charset: str = ""
    #: DICOM receiving processes sharing the port (SO_REUSEPORT); 0 = one per CPU core.
    dicom_processes: int = 0
    #: A re-sent SOP instance with different content: "keep" the first or "replace" it.
    dicom_duplicates: str = "keep"
    #: Seconds without a new instance, after a transfer ends, before a study counts as complete
    #: (0: at once). For modalities that send one series per association.
    study_quiet_seconds: float = 0.0
    #: A study with no transfer end (its receiver crashed) is completed after this long quiet.
    abandoned_study_seconds: float = 600.0
    #: An instance object with no index row (a crash between write and index) is removed once
    #: this old: longer than any ingest can take from object write to index commit.
    orphan_grace_seconds: float = 3600.0
    token_ttl_seconds: int = 12 * 3600
    #: How long a dispatched outbox message may stay unfinished before it is sent again.
    outbox_redeliver_seconds: float = 60.0
    #: Run a Celery worker as a child of ``telehub serve``; None means "when the broker is local".
    embedded_worker: bool | None = None
    worker_concurrency: int = 2
    #: Largest STOW-RS request body (bytes); bigger ones are refused with 413.
    stow_max_bytes: int = 4 * 1024**3
    #: Largest resumable upload (bytes) at /api/v1/uploads; bigger ones are refused with 413.
    upload_max_bytes: int = 4 * 1024**3
    #: SLA targets: seconds from study complete to final report, per priority.
    sla_stat_seconds: float = 30 * 60
    sla_urgent_seconds: float = 2 * 3600
    sla_routine_seconds: float = 24 * 3600
    #: An unclaimed case goes up a tier after this fraction of its SLA (0: never).
    sla_escalate_fraction: float = 0.5
    #: "SLA near breach" is notified after this fraction of the SLA.
    sla_warn_fraction: float = 0.8
    #: How often the Celery beat task checks deadlines, leases and escalations (seconds).
    sla_check_seconds: float = 30.0
    #: A claim or assignment lapses back to the worklist after this long without activity.
    claim_lease_seconds: float = 15 * 60
    #: Priors: "issuer" matches patients by (issuer, patient ID); "id" by patient ID alone
    #: (for a consortium that uses one identifier everywhere, e.g. the resident ID card number).
    patient_match: str = "issuer"
    #: Webhook delivery: attempts before a delivery is marked failed.
    webhook_max_attempts: int = 8
    #: Webhook delivery: first retry after this many seconds, doubling each time (max 1 h).
    webhook_backoff_seconds: float = 10.0
    # ----- consults (issue 6: telehub.consults, telehub.api.consults) -----------------
    #: ICE servers handed to consult participants, a JSON list of RTCIceServer objects, e.g.
    #: '[{"urls": ["stun:turn.example.cn:3478", "turn:turn.example.cn:3478?transport=udp"],
    #: "username": "u", "credential": "p"}]' (see docs/consults.md for coturn).
    ice_servers: str = "[]"
    #: Lifetime of a consult join token (POST /api/v1/consults/{id}/token).
    consult_token_ttl_seconds: int = 600
    #: Most participants connected to one consult (waiting room included).
    consult_max_participants: int = 6
    #: Consult media forwarded as received (VP8/Opus, no re-encoding; docs/consults.md) or,
    #: when false, decoded and re-encoded per viewer and for the recording.
    consult_media_forward: bool = True
    #: A participant whose link dropped may reconnect this long as the same participant.
    consult_reconnect_seconds: float = 30.0
    #: Most pointer-only shared-viewing updates relayed per second (the rest are coalesced).
    consult_pointer_hz: float = 30.0
    # ----- HTTP security (issue 8: telehub.security_headers, passwords, auth lockout) ---
    #: Shortest password the admin API and ``consortium load`` accept (the demo seed is exempt).
    password_min_length: int = 10
    #: Failed logins for one username within ``login_failure_window_seconds`` that lock it.
    login_max_failures: int = 5
    login_failure_window_seconds: float = 15 * 60
    #: How long a locked username answers 429 account_locked, even to the right password.
    login_lockout_seconds: float = 15 * 60
    #: Trust ``X-Forwarded-Proto`` from a TLS reverse proxy (only when the hub is reachable
    #: through the proxy alone): "https" there turns on Strict-Transport-Security.
    trust_forwarded_proto: bool = False
    #: Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the
    #: client: the audit trail, logs and login throttling then see the client's address, not
    #: the proxy's. Empty: X-Forwarded-For is ignored (anyone could write it).
    trusted_proxies: str = ""
    #: max-age of Strict-Transport-Security on HTTPS responses (seconds).
    hsts_max_age: int = 365 * 24 * 3600
    log_level: str = "INFO"
    #: "text" for people, "json" for one JSON object per line (a log pipeline).
    log_format: str = "text"
    #: Browser origins allowed to call /dicomweb (a web viewer such as OHIF); comma list, "*" any.
    cors_origins: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    # ----- derived values -------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data / 'telehub.sqlite3').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or str((self.data / "objects").resolve())

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_is_local(self) -> bool:
        return self.resolved_broker_url.startswith(("filesystem://", "memory://"))

    @property
    def broker_folder(self) -> Path:
        return (self.data / "broker").resolve()

    @property
    def beat_schedule_file(self) -> Path:
        """Where Celery beat keeps when each periodic task last ran."""
        return (self.data / "celerybeat-schedule").resolve()

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(p.strip(), strict=False)
            for p in self.trusted_proxies.split(",")
            if p.strip()
        )

    @property
    def receiver_processes(self) -> int:
        return self.dicom_processes or max(1, min(os.cpu_count() or 1, 8))

    @property
    def spool(self) -> Path:
        """Local, durable staging folder on the data disk (received files, uploads)."""
        return (self.data / "spool").resolve()

    def sla_seconds(self, priority: str) -> float:
        """The SLA target of a priority (stat, urgent, routine)."""
        return float(getattr(self, f"sla_{priority}_seconds"))

    @property
    def ice_server_list(self) -> list[dict[str, Any]]:
        """``ice_servers`` parsed (checked at load time)."""
        return json.loads(self.ice_servers)

    @property
    def run_embedded_worker(self) -> bool:
        if self.embedded_worker is None:
            return self.broker_is_local
        return self.embedded_worker

    # ----- loading --------------------------------------------------------------------
    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Build settings from the TOML file (or ``TELEHUB_CONFIG``), then the environment."""
        values: dict[str, Any] = {}
        path = config_file or os.environ.get(ENV_PREFIX + "CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    values.update(tomllib.load(fh).get("telehub", {}))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        for f in dataclasses.fields(cls):
            env = os.environ.get(ENV_PREFIX + f.name.upper())
            if env is not None and f.name != "extra":
                values[f.name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls._coerce(values)

    @classmethod
    def _coerce(cls, values: dict[str, Any]) -> Settings:
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, raw in values.items():
            if key not in known:
                extra[key] = raw
                continue
            default = known[key].default
            try:
                kwargs[key] = _convert(raw, default, key)
            except ValueError as exc:
                raise ConfigError(f"{ENV_PREFIX}{key.upper()}: {exc}") from exc
        settings = cls(**kwargs, extra=extra)
        if not (0 < settings.http_port < 65536 and 0 < settings.dicom_port < 65536):
            raise ConfigError("ports must be between 1 and 65535")
        if not (0 < len(settings.ae_title) <= 16):
            raise ConfigError("ae_title must be 1 to 16 characters")
        if settings.dicom_tls_key and not settings.dicom_tls_cert:
            raise ConfigError("dicom_tls_key needs dicom_tls_cert")
        if settings.dicom_default_charset:
            from pydicom.charset import python_encoding

            charset = settings.dicom_default_charset
            if charset not in python_encoding:
                raise ConfigError(f"unknown dicom_default_charset {charset!r}")
        if settings.dicom_duplicates not in ("keep", "replace"):
            raise ConfigError("dicom_duplicates must be 'keep' or 'replace'")
        if settings.log_format not in ("text", "json"):
            raise ConfigError("log_format must be 'text' or 'json'")
        if settings.patient_match not in ("issuer", "id"):
            raise ConfigError("patient_match must be 'issuer' or 'id'")
        try:
            settings.trusted_proxy_networks  # noqa: B018 - parsed here to fail at start
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc}") from exc
        for name in ("sla_stat_seconds", "sla_urgent_seconds", "sla_routine_seconds"):
            if getattr(settings, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if not (0 <= settings.sla_escalate_fraction <= 1 and 0 < settings.sla_warn_fraction <= 1):
            raise ConfigError("sla_escalate_fraction and sla_warn_fraction must be in [0, 1]")
        if settings.sla_check_seconds <= 0 or settings.claim_lease_seconds <= 0:
            raise ConfigError("sla_check_seconds and claim_lease_seconds must be positive")
        if settings.abandoned_study_seconds <= 0 or settings.orphan_grace_seconds < 0:
            raise ConfigError("abandoned_study_seconds > 0 and orphan_grace_seconds >= 0")
        if settings.dicom_processes < 0 or settings.study_quiet_seconds < 0:
            raise ConfigError("dicom_processes and study_quiet_seconds cannot be negative")
        _check_ice_servers(settings.ice_servers)  # consults
        if settings.consult_max_participants < 2 or settings.consult_pointer_hz <= 0:
            raise ConfigError("consult_max_participants >= 2 and consult_pointer_hz > 0")
        return settings

    def as_environment(self) -> dict[str, str]:
        """The settings as ``TELEHUB_*`` variables, to hand to a child process."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None:
                continue
            if f.name == "data":
                value = Path(value).resolve()
            env[ENV_PREFIX + f.name.upper()] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
        return env


def _convert(raw: Any, default: Any, key: str) -> Any:
    if key == "data":
        return Path(raw)
    if key == "embedded_worker":
        return None if raw in (None, "", "auto") else _to_bool(raw)
    if isinstance(default, bool):
        return _to_bool(raw)
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return str(raw)


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _check_ice_servers(raw: str) -> None:
    """ice_servers must be a JSON list of objects with "urls" (a string or a list of them)."""
    try:
        servers = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"ice_servers is not JSON: {exc}") from exc
    if not isinstance(servers, list) or not all(
        isinstance(s, dict) and isinstance(s.get("urls"), str | list) for s in servers
    ):
        raise ConfigError('ice_servers must be a JSON list of {"urls": ...} objects')
