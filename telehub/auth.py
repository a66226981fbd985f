"""Passwords (argon2) and bearer tokens (random, stored as SHA-256, expiring, revocable)."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from telehub import audit
from telehub.config import Settings
from telehub.db import Database
from telehub.db.models import ApiToken, LoginThrottle, User
from telehub.db.types import utcnow
from telehub.errors import TelehubError, Unauthorized

log = logging.getLogger(__name__)
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so timing does not reveal
    usernames; made on first use, not at import (argon2 costs every CLI start ~0.5 s)."""
    return _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Principal:
    """Who is calling: what the access rules need, detached from any session."""

    user_id: int
    username: str
    role: str
    facility_id: int
    centre_id: int | None


def _principal(user: User) -> Principal:
    return Principal(user.id, user.username, user.role, user.facility_id, user.centre_id)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccountLocked(TelehubError):
    """429: too many failed logins for this username; ``retry_after`` seconds until unlocked."""

    code = "account_locked"
    http_status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed logins: this account is locked, try again in {retry_after} s"
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class Lockout:
    """N failed logins for a username within a window lock it for a period."""

    max_failures: int = 5
    window_seconds: float = 15 * 60
    lock_seconds: float = 15 * 60

    @classmethod
    def from_settings(cls, settings: Settings) -> Lockout:
        return cls(
            settings.login_max_failures,
            settings.login_failure_window_seconds,
            settings.login_lockout_seconds,
        )


def _throttle_key(username: str) -> str:
    return username[:64]  # User.username's length: no account has a longer name


def _retry_after(locked_until: datetime | None, now: datetime) -> int | None:
    if locked_until is None or locked_until <= now:
        return None
    return max(1, math.ceil((locked_until - now).total_seconds()))


def login(
    db: Database,
    username: str,
    password: str,
    ttl_seconds: int,
    lockout: Lockout = Lockout(),
    remote: str = "",
) -> tuple[str, Principal]:
    """A new bearer token for the right password. Failures are counted per attempted
    username, known or not, so answers (401, then 429) and timing never tell which exist."""
    key = _throttle_key(username)
    with db.session() as session:
        throttle = session.get(LoginThrottle, key)
        wait = _retry_after(throttle.locked_until if throttle else None, utcnow())
        if wait is not None:
            raise AccountLocked(wait)
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            verify_password(_dummy_hash(), password)
            ok, user_id = False, None
        else:
            ok = verify_password(user.password_hash, password) and user.active
            user_id = user.id
        if ok and user is not None:
            if throttle is not None:
                session.delete(throttle)
            token = secrets.token_urlsafe(32)
            session.add(
                ApiToken(
                    token_hash=_digest(token),
                    user_id=user.id,
                    expires_at=utcnow() + timedelta(seconds=ttl_seconds),
                )
            )
            return token, _principal(user)
    _note_failure(db, key, lockout, user_id, remote)
    raise Unauthorized("wrong username or password", "invalid_credentials")


def _note_failure(
    db: Database, key: str, lockout: Lockout, user_id: int | None, remote: str
) -> None:
    """Count one failed login (its own transaction, so it stays when the login fails); the
    failure that reaches ``max_failures`` locks the username, audited and logged."""
    for attempt in range(2):  # a concurrent first failure may insert the row first
        try:
            with db.session() as session:
                now = utcnow()
                row = session.get(LoginThrottle, key, with_for_update=True)
                if row is None:
                    row = LoginThrottle(username=key, failures=0, first_failure_at=now)
                    session.add(row)
                elif row.first_failure_at + timedelta(seconds=lockout.window_seconds) <= now or (
                    row.locked_until is not None and row.locked_until <= now
                ):
                    row.failures, row.first_failure_at, row.locked_until = 0, now, None
                row.failures += 1
                if row.failures >= lockout.max_failures and row.locked_until is None:
                    row.locked_until = now + timedelta(seconds=lockout.lock_seconds)
                    audit.record(
                        session,
                        user_id,
                        "lock",
                        "login",
                        key,
                        remote=remote,
                        failures=row.failures,
                        locked_seconds=lockout.lock_seconds,
                    )
                    log.warning(
                        "login locked for username %r after %d failed attempts (from %s)",
                        key,
                        row.failures,
                        remote or "?",
                    )
            return
        except IntegrityError:
            if attempt:
                raise


def authenticate(db: Database, token: str) -> Principal:
    """Every request's first step: one indexed query for the token and its user."""
    with db.reader() as session:
        row = session.execute(
            select(
                ApiToken.revoked_at,
                ApiToken.expires_at,
                User.id,
                User.username,
                User.role,
                User.facility_id,
                User.centre_id,
                User.active,
            )
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == _digest(token))
        ).one_or_none()
    if row is None or row.revoked_at is not None:
        raise Unauthorized("invalid token", "invalid_token")
    if row.expires_at <= utcnow():
        raise Unauthorized("token expired", "token_expired")
    if not row.active:
        raise Unauthorized("account disabled", "invalid_token")
    return Principal(row.id, row.username, row.role, row.facility_id, row.centre_id)


def revoke(db: Database, token: str) -> None:
    with db.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(token)))
        if row is not None and row.revoked_at is None:
            row.revoked_at = utcnow()
