"""Outgoing webhooks: a generic signed JSON POST, and the group robots of WeCom (企业微信) and
DingTalk (钉钉), which hospital teams already read all day.

A message is built once, when its event happens, and kept in its ``WebhookDelivery`` row, so what
is sent never changes afterwards; the URL and secret are read at sending time. The patient's name
goes into a payload only for a webhook whose admin allowed it, and the patient ID never does.
Delivery is at least once: a receiver may see a message twice (``X-Telehub-Delivery`` tells).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import urllib3
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from telehub import audit, outbox
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import (
    DeliveryStatus,
    Facility,
    OutboxMessage,
    Role,
    Webhook,
    WebhookDelivery,
    WebhookKind,
)
from telehub.db.types import utcnow
from telehub.errors import Conflict, Forbidden, Invalid, NotFound

TASK = "telehub.deliver_webhook"
#: Seconds to connect and to wait for the answer: a slow robot must not hold a worker.
TIMEOUT = urllib3.Timeout(connect=5.0, read=10.0)
MAX_BACKOFF_SECONDS = 3600.0
SIGNATURE_HEADER = "X-Telehub-Signature"
#: The kind of the message an admin sends with "test".
TEST_KIND = "test"

_http = urllib3.PoolManager(retries=False, timeout=TIMEOUT)


# ----- messages and payloads -----------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    """What happened, in words fit to leave the hub; ``patient_name`` only where allowed."""

    event: str
    case_id: int | None
    priority: str | None
    modality: str
    facility: str
    centre: str
    title: str
    text: str
    at: str
    patient_name: str = ""


def payload_for(kind: str, message: Message, include_patient_name: bool) -> dict[str, Any]:
    """The request body for one webhook kind (WeCom and DingTalk robots take markdown)."""
    name = message.patient_name if include_patient_name else ""
    if kind == WebhookKind.JSON.value:
        body: dict[str, Any] = {
            "event": message.event,
            "case_id": message.case_id,
            "priority": message.priority,
            "modality": message.modality,
            "facility": message.facility,
            "centre": message.centre,
            "title": message.title,
            "text": message.text,
            "at": message.at,
        }
        if name:
            body["patient_name"] = name
        return body
    lines = [f"### {message.title}", f"> {message.text}"]
    if name:
        lines.append(f"> 患者 Patient: {name}")
    lines.append(f"> {message.at}")
    markdown = "\n".join(lines)
    if kind == WebhookKind.WECOM.value:
        # developer.work.weixin.qq.com/document/path/91770: markdown.content, at most 4096 bytes
        return {"msgtype": "markdown", "markdown": {"content": _clip(markdown, 4000)}}
    if kind == WebhookKind.DINGTALK.value:
        # open.dingtalk.com/document/development/robot-message-type: markdown.title and .text
        return {"msgtype": "markdown", "markdown": {"title": message.title, "text": markdown}}
    raise ValueError(f"unknown webhook kind {kind!r}")


def _clip(text: str, max_bytes: int) -> str:
    data = text.encode()
    return text if len(data) <= max_bytes else data[:max_bytes].decode(errors="ignore")


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact UTF-8 JSON."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def sign_body(secret: str, body: bytes) -> str:
    """Generic webhooks: ``sha256=<hex HMAC-SHA256 of the body>``, as GitHub does."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's 加签: base64 HMAC-SHA256 of "timestamp\\nsecret" keyed by the secret (not yet
    URL-encoded; urlencode does that)."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()


def dingtalk_url(url: str, secret: str, timestamp_ms: int | None = None) -> str:
    """The robot URL with ``timestamp`` and ``sign`` appended (DingTalk refuses a timestamp more
    than an hour off, so it is made at sending time)."""
    ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    query = urllib.parse.urlencode({"timestamp": ts, "sign": dingtalk_sign(secret, ts)})
    return url + ("&" if urllib.parse.urlsplit(url).query else "?") + query


# ----- fan-out (inside the event's transaction) ------------------------------------------------
def fan_out(session: Session, message: Message, facility_ids: set[int]) -> list[WebhookDelivery]:
    """One delivery per active webhook that wants this kind and covers one of the facilities,
    each with its payload built now and its outbox row in the same transaction."""
    hooks = session.scalars(
        select(Webhook).where(
            Webhook.active.is_(True),
            or_(Webhook.facility_id.is_(None), Webhook.facility_id.in_(facility_ids or {-1})),
        )
    )
    deliveries = []
    for hook in hooks:
        if hook.events and message.event not in hook.events:
            continue
        deliveries.append(_queue(session, hook, message))
    return deliveries


def _queue(session: Session, hook: Webhook, message: Message) -> WebhookDelivery:
    delivery = WebhookDelivery(
        webhook_id=hook.id,
        kind=message.event,
        case_id=message.case_id,
        payload=payload_for(hook.kind, message, hook.include_patient_name),
        status=DeliveryStatus.PENDING.value,
        attempts=0,
        last_error="",
    )
    session.add(delivery)
    session.flush()
    outbox.enqueue(session, TASK, delivery_id=delivery.id)
    return delivery


# ----- delivery (the Celery task's service) ----------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What one attempt came to; ``retry_in`` is set when the task should try again later."""

    status: str
    attempts: int
    error: str = ""
    retry_in: float | None = None


def backoff(base_seconds: float, attempts: int) -> float:
    """Exponential: base, 2*base, 4*base, ... after the 1st, 2nd, 3rd failure; at most 1 h."""
    return min(MAX_BACKOFF_SECONDS, base_seconds * 2 ** max(0, attempts - 1))


def deliver(
    db: Database,
    delivery_id: int,
    outbox_id: int | None = None,
    *,
    max_attempts: int = 8,
    backoff_seconds: float = 10.0,
    redeliver_seconds: float = 60.0,
) -> Outcome:
    """Send one pending delivery once. The HTTP call runs outside any transaction; the result
    is recorded afterwards. A delivered or failed row is left alone, so reruns are harmless."""
    with db.reader() as session:
        row = session.get(WebhookDelivery, delivery_id)
        hook = session.get(Webhook, row.webhook_id) if row is not None else None
        now = Outcome(row.status, row.attempts) if row is not None else Outcome("gone", 0)
        job = None
        if row is not None and hook is not None and row.status == DeliveryStatus.PENDING.value:
            job = (hook.kind, hook.url, hook.secret, dict(row.payload))
    if job is None:
        with db.session() as session:
            outbox.mark_done(session, outbox_id)
        return now
    error = send(*job, delivery_id)
    with db.session() as session:
        row = session.get(WebhookDelivery, delivery_id, with_for_update=not db.is_sqlite)
        if row is None or row.status != DeliveryStatus.PENDING.value:
            outbox.mark_done(session, outbox_id)
            return Outcome(row.status if row else "gone", row.attempts if row else 0)
        row.attempts += 1
        if error is None:
            row.status = DeliveryStatus.DELIVERED.value
            row.delivered_at = utcnow()
            row.last_error = ""
        else:
            row.last_error = error[:1000]
            if row.attempts >= max_attempts:
                row.status = DeliveryStatus.FAILED.value
        if row.status != DeliveryStatus.PENDING.value:
            outbox.mark_done(session, outbox_id)
            return Outcome(row.status, row.attempts, row.last_error)
        wait = backoff(backoff_seconds, row.attempts)
        if outbox_id is not None:
            # The Celery retry carries on; should its message be lost, the relay sends the
            # outbox row again once this has passed.
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == outbox_id, OutboxMessage.done_at.is_(None))
                .values(due_at=utcnow() + timedelta(seconds=wait + redeliver_seconds))
            )
        return Outcome(row.status, row.attempts, row.last_error, retry_in=wait)


def send(kind: str, url: str, secret: str, payload: dict[str, Any], delivery_id: int) -> str | None:
    """POST the payload; None on success, else why it failed (for ``last_error``)."""
    body = body_bytes(payload)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "telehub-webhook/1",
        "X-Telehub-Delivery": str(delivery_id),
    }
    if kind == WebhookKind.JSON.value:
        headers["X-Telehub-Event"] = str(payload.get("event", ""))
        if secret:
            headers[SIGNATURE_HEADER] = sign_body(secret, body)
    elif kind == WebhookKind.DINGTALK.value and secret:
        url = dingtalk_url(url, secret)
    try:
        resp = _http.request("POST", url, body=body, headers=headers, redirect=False)
    except urllib3.exceptions.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    text = resp.data[:500].decode(errors="replace")
    if not 200 <= resp.status < 300:
        return f"HTTP {resp.status}: {text}"
    if kind in (WebhookKind.WECOM.value, WebhookKind.DINGTALK.value):
        # Both robots answer 200 with {"errcode": 0, "errmsg": "ok"}; anything else failed.
        try:
            answer = json.loads(resp.data)
        except ValueError:
            return f"HTTP {resp.status}, not JSON: {text}"
        if not isinstance(answer, dict) or answer.get("errcode") != 0:
            return f"robot refused: {text}"
    return None


# ----- administration ------------------------------------------------------------------------
def _admin(principal: Principal) -> None:
    if principal.role != Role.ADMIN.value:
        raise Forbidden("only admins manage webhooks", "admin_only")


def describe(hook: Webhook) -> dict[str, Any]:
    """A webhook as admins see it: never its secret, nor the key in a robot URL's query."""
    return {
        "id": hook.id,
        "name": hook.name,
        "kind": hook.kind,
        "url": masked_url(hook.url),
        "secret": "set" if hook.secret else "unset",
        "events": list(hook.events or []),
        "facility_id": hook.facility_id,
        "include_patient_name": hook.include_patient_name,
        "active": hook.active,
        "created_at": hook.created_at.isoformat(),
    }


def masked_url(url: str) -> str:
    """Query values hidden: a WeCom ``key`` or DingTalk ``access_token`` is a credential."""
    parts = urllib.parse.urlsplit(url)
    if not parts.query:
        return url
    query = "&".join(
        f"{k}=***" for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _validated(session: Session, body: dict[str, Any], creating: bool) -> dict[str, Any]:
    from telehub.notifications import KINDS

    allowed = {
        "name",
        "kind",
        "url",
        "secret",
        "events",
        "facility_id",
        "include_patient_name",
        "active",
    }
    unknown = set(body) - allowed
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(sorted(unknown))}", "bad_webhook")
    if creating:
        for required in ("name", "kind", "url"):
            if required not in body:
                raise Invalid(f'"{required}" is required', "bad_webhook")
    out: dict[str, Any] = {}
    if "name" in body:
        name = body["name"]
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise Invalid("name must be 1 to 100 characters", "bad_webhook")
        out["name"] = name.strip()
    if "kind" in body:
        if not isinstance(body["kind"], str) or body["kind"] not in {k.value for k in WebhookKind}:
            raise Invalid("kind must be json, wecom or dingtalk", "bad_webhook")
        out["kind"] = body["kind"]
    if "url" in body:
        out["url"] = check_url(body["url"])
    if "secret" in body:
        secret = body["secret"]
        if not isinstance(secret, str) or len(secret) > 200:
            raise Invalid("secret must be a string of at most 200 characters", "bad_webhook")
        out["secret"] = secret
    if "events" in body:
        events = body["events"]
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise Invalid("events must be a list of notification kinds", "bad_webhook")
        bad = sorted(set(events) - set(KINDS))
        if bad:
            raise Invalid(
                f"unknown events {bad}; known: {', '.join(sorted(KINDS))}", "unknown_event"
            )
        out["events"] = sorted(set(events))
    if "facility_id" in body:
        fid = body["facility_id"]
        if fid is not None and (
            not isinstance(fid, int) or isinstance(fid, bool) or session.get(Facility, fid) is None
        ):
            raise Invalid(f"facility {fid!r} does not exist", "unknown_facility")
        out["facility_id"] = fid
    for flag in ("include_patient_name", "active"):
        if flag in body:
            if not isinstance(body[flag], bool):
                raise Invalid(f"{flag} must be true or false", "bad_webhook")
            out[flag] = body[flag]
    return out


def check_url(url: Any) -> str:
    """Only absolute http(s) URLs with a host; anything else (file:, ftp:, relative) is refused."""
    if not isinstance(url, str) or len(url) > 1000:
        raise Invalid("url must be a string of at most 1000 characters", "bad_url")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("url must be an absolute http:// or https:// URL", "bad_url")
    return url.strip()


def list_webhooks(db: Database, principal: Principal) -> list[dict[str, Any]]:
    _admin(principal)
    with db.reader() as session:
        return [describe(h) for h in session.scalars(select(Webhook).order_by(Webhook.id))]


def get_webhook(db: Database, principal: Principal, webhook_id: int) -> dict[str, Any]:
    _admin(principal)
    with db.reader() as session:
        return describe(_load(session, webhook_id))


def _load(session: Session, webhook_id: int) -> Webhook:
    hook = session.get(Webhook, webhook_id)
    if hook is None:
        raise NotFound(f"webhook {webhook_id} not found")
    return hook


def _name_taken(session: Session, name: str, other_than: int | None = None) -> None:
    query = select(Webhook.id).where(Webhook.name == name)
    if other_than is not None:
        query = query.where(Webhook.id != other_than)
    if session.scalar(query) is not None:
        raise Conflict(f"a webhook named {name!r} exists", "webhook_exists")


def create_webhook(
    db: Database, principal: Principal, body: dict[str, Any], remote: str
) -> dict[str, Any]:
    _admin(principal)
    with db.session() as session:
        values = _validated(session, body, creating=True)
        _name_taken(session, values["name"])
        hook = Webhook(**{"secret": "", "events": [], "include_patient_name": False, **values})
        session.add(hook)
        session.flush()
        audit.record(session, principal.user_id, "create", "webhook", hook.id, remote=remote)
        return describe(hook)


def update_webhook(
    db: Database, principal: Principal, webhook_id: int, body: dict[str, Any], remote: str
) -> dict[str, Any]:
    _admin(principal)
    with db.session() as session:
        hook = _load(session, webhook_id)
        values = _validated(session, body, creating=False)
        if "name" in values:
            _name_taken(session, values["name"], other_than=hook.id)
        for key, value in values.items():
            setattr(hook, key, value)
        audit.record(
            session,
            principal.user_id,
            "update",
            "webhook",
            hook.id,
            remote=remote,
            fields=sorted(values),
        )
        session.flush()
        return describe(hook)


def delete_webhook(db: Database, principal: Principal, webhook_id: int, remote: str) -> None:
    """Remove a webhook and its delivery history; pending deliveries are dropped with it."""
    _admin(principal)
    with db.session() as session:
        hook = _load(session, webhook_id)
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
        session.delete(hook)
        audit.record(session, principal.user_id, "delete", "webhook", webhook_id, remote=remote)


def describe_delivery(row: WebhookDelivery, hook: Webhook) -> dict[str, Any]:
    return {
        "id": row.id,
        "webhook": {"id": hook.id, "name": hook.name, "kind": hook.kind},
        "kind": row.kind,
        "case_id": row.case_id,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "payload": row.payload,
        "created_at": row.created_at.isoformat(),
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
    }


def list_deliveries(
    db: Database,
    principal: Principal,
    status: str | None = None,
    webhook_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """Newest first; ``status=failed`` is the admins' list of messages that never arrived."""
    _admin(principal)
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        raise Invalid(f"unknown status {status!r}", "bad_parameter")
    with db.reader() as session:
        query = select(WebhookDelivery, Webhook).join(
            Webhook, Webhook.id == WebhookDelivery.webhook_id
        )
        if status:
            query = query.where(WebhookDelivery.status == status)
        if webhook_id is not None:
            query = query.where(WebhookDelivery.webhook_id == webhook_id)
        total = session.scalar(select(func.count()).select_from(query.subquery()))
        rows = session.execute(
            query.order_by(WebhookDelivery.id.desc()).limit(limit).offset(offset)
        ).all()
        return {"deliveries": [describe_delivery(d, h) for d, h in rows], "total": total or 0}


def retry_delivery(
    db: Database, principal: Principal, delivery_id: int, remote: str
) -> dict[str, Any]:
    """Send a failed delivery again (same payload), with a fresh count of attempts."""
    _admin(principal)
    with db.session() as session:
        row = session.get(WebhookDelivery, delivery_id, with_for_update=not db.is_sqlite)
        if row is None:
            raise NotFound(f"delivery {delivery_id} not found")
        if row.status != DeliveryStatus.FAILED.value:
            raise Conflict(f"delivery {delivery_id} is {row.status}, not failed", "not_failed")
        row.status = DeliveryStatus.PENDING.value
        row.attempts = 0
        outbox.enqueue(session, TASK, delivery_id=row.id)
        audit.record(session, principal.user_id, "retry", "webhook_delivery", row.id, remote=remote)
        session.flush()
        return describe_delivery(row, session.get_one(Webhook, row.webhook_id))


def send_test(db: Database, principal: Principal, webhook_id: int, remote: str) -> dict[str, Any]:
    """Send a test message now, once, and answer how it went (kept as a ``test`` delivery)."""
    _admin(principal)
    with db.session() as session:
        hook = _load(session, webhook_id)
        message = Message(
            event=TEST_KIND,
            case_id=None,
            priority=None,
            modality="",
            facility="",
            centre="",
            title="telehub 测试消息 Test message",
            text=f"来自 telehub 的测试 A test from telehub (webhook {hook.name})",
            at=utcnow().isoformat(),
        )
        delivery = WebhookDelivery(
            webhook_id=hook.id,
            kind=TEST_KIND,
            payload=payload_for(hook.kind, message, hook.include_patient_name),
            status=DeliveryStatus.PENDING.value,
            attempts=0,
            last_error="",
        )
        session.add(delivery)
        session.flush()
        delivery_id = delivery.id
        audit.record(session, principal.user_id, "test", "webhook", hook.id, remote=remote)
    deliver(db, delivery_id, max_attempts=1)
    with db.reader() as session:
        row = session.get_one(WebhookDelivery, delivery_id)
        return describe_delivery(row, session.get_one(Webhook, row.webhook_id))
