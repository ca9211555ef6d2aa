"""API keys: made here, shown once, stored only as a hash.

A key is ``rt_`` followed by 32 URL-safe characters (192 random bits). Because keys are
random and long, one SHA-256 is the right storage (as GitHub and Stripe do for tokens):
a slow password hash would only slow every request down without adding strength. The
first 11 characters (the *prefix*) are stored in clear to recognise a key in listings.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable

from ragtide.errors import InvalidRequest
from ragtide.types import SCOPES, ApiKeyRecord, validate_namespace

__all__ = ["KEY_PREFIX", "hash_key", "looks_like_key", "new_key"]

KEY_PREFIX = "rt_"
_SHOWN = 11  # "rt_" + 8 characters
_MAX_SCOPES = len(SCOPES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX) and len(token) == len(KEY_PREFIX) + 32


def new_key(
    tenant: str,
    scopes: Iterable[str],
    *,
    namespaces: Iterable[str] | None = None,
    expires_at: float | None = None,
    description: str = "",
    now: float | None = None,
) -> tuple[str, ApiKeyRecord]:
    """A fresh key and the record to store for it (which does not contain the key)."""
    now = time.time() if now is None else now
    wanted = tuple(dict.fromkeys(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown or not wanted or len(wanted) > _MAX_SCOPES:
        raise InvalidRequest(f"scopes must be a non-empty subset of {list(SCOPES)}")
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest("expires_at must be in the future")
    limited = None
    if namespaces is not None:
        limited = tuple(sorted({validate_namespace(n) for n in namespaces}))
        if not limited:
            raise InvalidRequest("namespaces, when given, must name at least one namespace")
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    record = ApiKeyRecord(
        id="key_" + secrets.token_hex(8),
        tenant=tenant,
        prefix=key[:_SHOWN],
        hash=hash_key(key),
        scopes=wanted,
        namespaces=limited,
        description=description[:200],
        created_at=now,
        expires_at=expires_at,
    )
    return key, record
