"""Secrets: password hashes (Argon2id), bearer tokens (JWT, HS256) and API keys.

Passwords are chosen by people, so they are hashed with Argon2id, which is
slow on purpose. API keys are 32 random bytes: nobody can guess one, so a
SHA-256 of the secret part is enough at rest, and checking it costs
microseconds on every request instead of Argon2's tens of milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gridwatch.settings import Settings

TOKEN_ALGORITHM = "HS256"  # noqa: S105  (an algorithm name)
API_KEY_PREFIX = "gw"
_hasher = PasswordHasher()
# Verifying against this when the user is unknown takes as long as a real check,
# so the time of a failed login does not tell whether the name exists.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` (salted, with its parameters)."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; an absent hash never matches (API-key-only users)."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


class TokenError(ValueError):
    """A bearer token that is malformed, forged or expired."""


@dataclass(frozen=True, slots=True)
class Tokens:
    """Issues and checks bearer tokens with one signing key."""

    key: str
    ttl_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        """The configured key; in development without one, a random key for this process."""
        key = settings.required_api_secret() or secrets.token_hex(32)
        return cls(key, settings.api_token_ttl_s)

    def issue(self, user_id: int, now_s: int) -> str:
        """A token naming the user, valid for ``ttl_s``."""
        claims = {"sub": str(user_id), "iat": now_s, "exp": now_s + self.ttl_s}
        return jwt.encode(claims, self.key, algorithm=TOKEN_ALGORITHM)

    def user_id(self, token: str) -> int:
        """The user a valid token names; ``TokenError`` otherwise."""
        try:
            claims = jwt.decode(
                token, self.key, algorithms=[TOKEN_ALGORITHM], options={"require": ["exp", "sub"]}
            )
            return int(claims["sub"])
        except (jwt.InvalidTokenError, ValueError) as exc:
            raise TokenError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A freshly made key: ``key`` is shown once, the rest is stored."""

    key: str
    prefix: str
    secret_hash: str


def new_api_key() -> NewApiKey:
    """Make a key ``gw_<prefix>_<secret>``."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewApiKey(f"{API_KEY_PREFIX}_{prefix}_{secret}", prefix, hash_secret(secret))


def hash_secret(secret: str) -> str:
    """SHA-256 (hex) of an API key's secret part."""
    return hashlib.sha256(secret.encode()).hexdigest()


def split_api_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of something shaped like an API key, else None."""
    head, _, rest = key.partition("_")
    prefix, _, secret = rest.partition("_")
    if head != API_KEY_PREFIX or not prefix or not secret:
        return None
    return prefix, secret


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Compare in constant time."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)
