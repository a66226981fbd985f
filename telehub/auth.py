"""Passwords (argon2) and bearer tokens (random, stored as SHA-256, expiring, revocable)."""

from __future__ import annotations

import functools
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


def login(db: Database, username: str, password: str, ttl_seconds: int) -> tuple[str, Principal]:
    with db.session() as session:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            verify_password(_dummy_hash(), password)
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
