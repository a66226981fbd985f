"""Passwords (argon2) and bearer tokens (random, stored as SHA-256, expiring, revocable)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from telehub.db import Database
from telehub.db.models import ApiToken, User
from telehub.db.types import utcnow
from telehub.errors import Unauthorized

_hasher = PasswordHasher()
# A hash to verify against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


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


def login(db: Database, username: str, password: str, ttl_seconds: int) -> tuple[str, Principal]:
    with db.session() as session:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            verify_password(_DUMMY_HASH, password)
            raise Unauthorized("wrong username or password", "invalid_credentials")
        if not verify_password(user.password_hash, password) or not user.active:
            raise Unauthorized("wrong username or password", "invalid_credentials")
        token = secrets.token_urlsafe(32)
        session.add(
            ApiToken(
                token_hash=_digest(token),
                user_id=user.id,
                expires_at=utcnow() + timedelta(seconds=ttl_seconds),
            )
        )
        return token, _principal(user)


def authenticate(db: Database, token: str) -> Principal:
    with db.reader() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(token)))
        if row is None or row.revoked_at is not None:
            raise Unauthorized("invalid token", "invalid_token")
        if row.expires_at <= utcnow():
            raise Unauthorized("token expired", "token_expired")
        if not row.user.active:
            raise Unauthorized("account disabled", "invalid_token")
        return _principal(row.user)


def revoke(db: Database, token: str) -> None:
    with db.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(token)))
        if row is not None and row.revoked_at is None:
            row.revoked_at = utcnow()
