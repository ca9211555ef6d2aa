"""Turn an ``Authorization`` header into a ``Principal``, in O(1) on the hot path.

Credentials, in the order they are recognised:

- the bootstrap admin key (``auth.admin_key`` or ``auth.admin_key_file``): manages
  tenants and keys; its own data is the default tenant's;
- an API key (``rt_…``): looked up by its SHA-256, cached per replica for at most
  ``auth.cache_seconds`` (≤ 5 s), which bounds how long a revoked key keeps working;
- a JWT, when a JWKS is configured: verified by ``ragtide.auth.jwt.JWTVerifier``.

Every principal's tenant must exist and be enabled. With ``auth.enabled`` off, a request
without a credential is the default tenant's anonymous caller with every scope; one that
does present a credential is still checked, so keys behave the same in both modes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from ragtide.auth.keys import hash_key, looks_like_key
from ragtide.components import TenantStore
from ragtide.errors import ConfigError, Unauthenticated
from ragtide.settings import AuthSettings
from ragtide.types import DEFAULT_TENANT, SCOPES, ApiKeyRecord, Principal

if TYPE_CHECKING:
    from ragtide.auth.jwt import JWTVerifier
    from ragtide.tenants import TenantDirectory

__all__ = ["ANONYMOUS", "Authenticator"]

logger = logging.getLogger(__name__)

ANONYMOUS = Principal(DEFAULT_TENANT, "anonymous", frozenset(SCOPES), kind="anonymous")
_ADMIN = Principal(DEFAULT_TENANT, "admin", frozenset(SCOPES), kind="admin")
_INVALID = "invalid or expired credential"  # one message: no oracle for key guessing


class Authenticator:
    def __init__(
        self,
        settings: AuthSettings,
        store: TenantStore,
        directory: TenantDirectory,
        *,
        jwt: JWTVerifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._directory = directory
        self._jwt = jwt
        self._clock = clock
        self._admin_hash: bytes | None = None
        # key hash -> (record or None when unknown, when it was read)
        self._keys: OrderedDict[str, tuple[ApiKeyRecord | None, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    async def start(self) -> None:
        admin = self._settings.admin_key
        path = self._settings.admin_key_file
        if path is not None:
            try:
                text = await asyncio.to_thread(path.read_text, encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"auth.admin_key_file {path}: {exc.strerror}") from None
            admin = text.strip()
        if admin is not None:
            if len(admin) < 24:
                raise ConfigError("the admin key must be at least 24 characters long")
            self._admin_hash = hashlib.sha256(admin.encode()).digest()
        if self._jwt is not None:
            await self._jwt.start()

    async def aclose(self) -> None:
        if self._jwt is not None:
            await self._jwt.aclose()

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            if self._settings.enabled:
                raise Unauthenticated("this API needs a credential: Authorization: Bearer <key>")
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("use Authorization: Bearer <API key or token>")
        if self._admin_hash is not None and hmac.compare_digest(
            hashlib.sha256(token.encode()).digest(), self._admin_hash
        ):
            return _ADMIN
        if looks_like_key(token):
            principal = await self._from_key(token)
        elif self._jwt is not None and token.count(".") == 2:
            principal = await self._jwt.verify(token)
        else:
            raise Unauthenticated(_INVALID)
        if not await self._directory.exists(principal.tenant):
            raise Unauthenticated(_INVALID)
        return principal

    async def _from_key(self, key: str) -> Principal:
        digest = hash_key(key)
        now = self._clock()
        cached = self._keys.get(digest)
        if cached is not None and now - cached[1] < self._settings.cache_seconds:
            record = cached[0]
            self._keys.move_to_end(digest)
        else:
            record = await self._store.key_by_hash(digest)
            self._keys[digest] = (record, now)
            self._keys.move_to_end(digest)
            while len(self._keys) > self._settings.cache_entries:
                self._keys.popitem(last=False)
        if (
            record is None
            or record.revoked_at is not None
            or (record.expires_at is not None and record.expires_at <= now)
        ):
            raise Unauthenticated(_INVALID)
        return Principal(
            tenant=record.tenant,
            subject=f"key:{record.id}",
            scopes=frozenset(record.scopes),
            kind="key",
            key_id=record.id,
            namespaces=None if record.namespaces is None else frozenset(record.namespaces),
            expires_at=record.expires_at,
        )

    def forget(self, key_hash: str) -> None:
        """Drop a cached key check on this replica (after a revocation made here)."""
        self._keys.pop(key_hash, None)
