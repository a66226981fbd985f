"""Password policy: refuse passwords a guesser would try first, wherever a password is set.

Applied by the consortium admin API (users, whole definitions) and ``telehub consortium load``;
the demo seed is exempt on purpose (its accounts all use "demo", see docs/security.md).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from telehub.config import Settings
from telehub.errors import Invalid

#: A short list of the passwords tried first in every guessing attack (lower case; compared
#: case-insensitively). Long ones matter: they pass the length rule.
_COMMON_TEXT = """
    123456 1234567 12345678 123456789 1234567890 0123456789 1q2w3e4r 1q2w3e4r5t 1qaz2wsx
    1qaz2wsx3edc 11111111 00000000 88888888 66666666 12341234 abc123 abc12345 abcd1234
    abcdefg123 a1234567 a12345678 a123456789 qwerty qwertyuiop qwerty123 qwerty1234 password
    password1 password12 password123 passw0rd p@ssw0rd p@ssword admin admin123 admin1234
    administrator root123 letmein letmein123 welcome welcome1 welcome123 iloveyou iloveyou1
    woaini woaini1314 woaini520 5201314 1314520 aa123456 aa12345678 qq123456 zxcvbnm
    zxcvbnm123 asdfghjkl asdf1234 monkey dragon football baseball sunshine princess
    changeme changeme123 default telehub telehub123 doctor doctor123 hospital hospital123
"""
COMMON = frozenset(_COMMON_TEXT.split())


class WeakPassword(Invalid):
    """400 ``weak_password``: the message says which rule the password broke."""

    code = "weak_password"


@dataclass(frozen=True)
class Policy:
    min_length: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(min_length=settings.password_min_length)


#: The policy with its default settings (for callers without settings at hand).
DEFAULT_POLICY = Policy()


def _classes(password: str) -> int:
    kinds = (
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    )
    return sum(kinds)


def problem(password: str, username: str = "", policy: Policy = DEFAULT_POLICY) -> str | None:
    """Why ``password`` is refused, or None when it is acceptable."""
    if len(password) < policy.min_length:
        return f"a password needs at least {policy.min_length} characters"
    folded = password.casefold()
    if username and username.casefold() in (folded, folded[::-1]):
        return "a password may not be the username"
    if folded in COMMON or folded.rstrip(string.digits + string.punctuation) in COMMON:
        return "this password is on the list of the most common passwords"
    if len(set(folded)) <= 2:
        return "a password may not repeat one or two characters"
    if _classes(password) < 2:
        return "a password needs two kinds of characters (letters, digits, symbols, case)"
    return None


def check(password: str, username: str = "", policy: Policy = DEFAULT_POLICY) -> None:
    """Raise WeakPassword when ``password`` breaks the policy."""
    reason = problem(password, username, policy)
    if reason is not None:
        who = f' for user "{username}"' if username else ""
        raise WeakPassword(f"password{who} refused: {reason}")
