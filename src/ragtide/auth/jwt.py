"""OIDC/JWT bearer credentials, verified against the identity provider's JWKS.

``JWTVerifier.verify(token)`` turns a signed token into a ``Principal`` or raises
``Unauthenticated`` with a message that says what is wrong (never the token itself).

* Crypto is PyJWT's (``jwt.PyJWK`` + ``jwt.decode``). Only asymmetric algorithms are
  accepted: ``none`` and HMAC (``HS*``) are refused even when configured, because a
  verifier that accepts HS256 can be fed a token "signed" with the public key's bytes.
  The token's ``kid`` picks the key and its ``alg`` must both be allowed and fit that key.
* Keys are trusted for ``jwks_cache_s``; an unknown ``kid`` refetches them at most once per
  ``REFETCH_INTERVAL_S`` (a flood of forged kids cannot make us hammer the IdP); a failed
  fetch keeps the previous keys. Fetches use httpx's async client, the file is read in a
  thread: the event loop never blocks.
* Verified tokens are kept (by sha256) in a bounded LRU until ``min(exp, now + 60 s)``, so
  the hot path is one dict lookup.

Time comes from the injected ``clock`` (``exp``/``nbf``/``iat`` are checked here with
``leeway_s``, not by PyJWT, which would read the wall clock itself).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from ragtide.errors import BackendUnavailable, ConfigError, InvalidRequest, Unauthenticated
from ragtide.settings import JWTSettings
from ragtide.types import SCOPES, Principal, validate_tenant

__all__ = ["JWTVerifier", "looks_like_jwt"]

logger = logging.getLogger(__name__)

REFETCH_INTERVAL_S = 30.0  # at most one JWKS fetch per this many seconds for unknown kids
TOKEN_CACHE_S = 60.0  # a verified token is trusted this long (or until exp, if sooner)
TOKEN_CACHE_ENTRIES = 10_000
MAX_TOKEN_CHARS = 16_384
MAX_JWKS_BYTES = 1_048_576

# What each accepted algorithm verifies with: (kty, the curves it fits, or None for any).
_KEY_TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "ES256K": ("EC", frozenset({"secp256k1"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_PRINTABLE_ALG = re.compile(r"[A-Za-z0-9_+-]{1,20}")
_GROUP_SEPARATORS = re.compile(r"[\s,]+")


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments (the last may be empty, as in ``alg: none``). Cheap: no
    decoding. API keys (``rt_…``) never match."""
    return (
        len(token) <= MAX_TOKEN_CHARS
        and not token.startswith("rt_")
        and _JWT_SHAPE.fullmatch(token) is not None
    )


class _JWKSError(Exception):
    """A JWKS could not be fetched or parsed (kept inside this module)."""


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    by_alg: Mapping[str, jwt.PyJWK]  # one PyJWK per allowed algorithm this key fits
    fingerprint: str


@dataclass(frozen=True, slots=True)
class _KeySet:
    keys: tuple[_Key, ...]

    def find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key for this header, None if ``kid`` is unknown; raises if it cannot fit."""
        candidates: tuple[_Key, ...]
        if kid is None:
            if len(self.keys) != 1:
                raise Unauthenticated(
                    "the token names no key id (kid) and the identity provider has several keys"
                )
            candidates = self.keys
        else:
            candidates = tuple(k for k in self.keys if k.kid == kid)
            if not candidates:
                return None
        for key in candidates:
            if alg in key.by_alg:
                return key.by_alg[alg]
        raise Unauthenticated(f"algorithm {_shown(alg)} does not match the token's signing key")


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    until: float


class JWTVerifier:
    """Verifies bearer JWTs against a JWKS (``settings.jwks_url`` or ``settings.jwks_file``).

    ``__init__`` is cheap and does no I/O; ``start()`` loads the keys; ``aclose()`` closes
    the HTTP client if this verifier made it. ``http`` is the seam for tests and for
    sharing a client; ``clock`` (seconds since the epoch) for controlling time.
    """

    def __init__(
        self,
        settings: JWTSettings,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (settings.jwks_url is None) == (settings.jwks_file is None):
            raise ConfigError("JWT auth needs exactly one of jwks_url and jwks_file")
        self._settings = settings
        self._algorithms = _allowed_algorithms(settings.algorithms)
        self._http = http
        self._own_http = http is None
        self._clock = clock
        self._keys: _KeySet | None = None
        self._fetched_at = -math.inf  # when the current keys were loaded
        self._attempted_at = -math.inf  # when a load was last tried, successful or not
        self._kid_refetched_at = -math.inf  # when an unknown kid last made us load
        self._lock = asyncio.Lock()
        self._tokens: OrderedDict[bytes, _Verified] = OrderedDict()
        self._default_scopes = frozenset(settings.default_scopes) & frozenset(SCOPES)

    async def start(self) -> None:
        """Load the keys. A missing or bad ``jwks_file`` is a ``ConfigError``; an IdP
        that cannot be reached is only logged, and retried when a token arrives."""
        url = self._settings.jwks_url
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
                logger.warning("JWKS URL is not https: keys can be swapped in transit")
        async with self._lock:
            try:
                self._install(await self._load(), self._clock())
            except _JWKSError as exc:
                self._attempted_at = self._clock()
                if self._settings.jwks_file is not None:
                    raise ConfigError(f"cannot load the JWKS file: {exc}") from exc
                logger.warning("JWKS fetch failed; will retry", extra={"reason": str(exc)})

    async def aclose(self) -> None:
        self._tokens.clear()
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("the token is too long")
        if _JWT_SHAPE.fullmatch(token) is None:
            raise Unauthenticated("the token is malformed")
        now = self._clock()
        digest = hashlib.sha256(token.encode("ascii")).digest()
        hit = self._tokens.get(digest)
        if hit is not None:
            if now < hit.until:
                self._tokens.move_to_end(digest)
                return hit.principal
            del self._tokens[digest]
        principal = await self._verify(token)
        until = min(principal.expires_at or now, now + TOKEN_CACHE_S)
        if until > now:
            self._tokens[digest] = _Verified(principal, until)
            if len(self._tokens) > TOKEN_CACHE_ENTRIES:
                self._tokens.popitem(last=False)
        return principal

    # --- one token ----------------------------------------------------------------------

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is malformed") from exc
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise Unauthenticated("the token's header names no algorithm")
        if alg not in self._algorithms:
            raise Unauthenticated(f"algorithm {_shown(alg)} is not allowed")
        kid = header.get("kid")  # PyJWT has checked that a kid is a string
        claims = self._decode(token, await self._key(kid, alg))
        self._check_times(claims)
        return self._principal(claims)

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        s = self._settings
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                issuer=s.issuer,
                audience=s.audience,
                options={
                    "require": ["exp", "sub", s.tenant_claim],
                    "verify_iss": s.issuer is not None,
                    "verify_aud": s.audience is not None,
                    "verify_exp": False,  # checked by _check_times against self._clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("the token's signature does not verify") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token has no {exc.claim!r} claim") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("the token's issuer (iss) is not accepted") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("the token's audience (aud) is not accepted") from exc
        except jwt.InvalidKeyError as exc:
            raise Unauthenticated("the token's signing key is too weak") from exc
        except jwt.DecodeError as exc:
            raise Unauthenticated("the token is malformed") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is invalid") from exc

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now, leeway = self._clock(), self._settings.leeway_s
        exp, nbf, iat = (_number(claims, name) for name in ("exp", "nbf", "iat"))
        if exp is not None and now >= exp + leeway:
            raise Unauthenticated("the token has expired")
        if nbf is not None and nbf > now + leeway:
            raise Unauthenticated("the token is not valid yet (nbf)")
        if iat is not None and iat > now + leeway:
            raise Unauthenticated("the token was issued in the future (iat)")

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        s = self._settings
        tenant = claims[s.tenant_claim]
        if not isinstance(tenant, str) or not _is_tenant(tenant):
            raise Unauthenticated(f"the token's {s.tenant_claim!r} claim is not a valid tenant id")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise Unauthenticated("the token's 'sub' claim must be a non-empty string")
        scopes = _words(claims, s.scopes_claim, re.compile(r"\s+"))
        groups = _words(claims, s.groups_claim, _GROUP_SEPARATORS)
        return Principal(
            tenant=tenant,
            subject=f"jwt:{sub}",
            scopes=self._default_scopes if scopes is None else scopes & frozenset(SCOPES),
            kind="jwt",
            key_id=None,
            groups=groups or frozenset(),
            expires_at=float(claims["exp"]),
        )

    # --- keys ---------------------------------------------------------------------------

    async def _key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        now = self._clock()
        if self._keys is None:
            await self._refresh(lambda t: t - self._attempted_at >= REFETCH_INTERVAL_S)
        elif now >= self._fetched_at + self._settings.jwks_cache_s and not self._lock.locked():
            # Stale keys: one request refreshes; the others go on with the keys they have.
            await self._refresh(self._stale)
        if self._keys is None:
            raise BackendUnavailable("the identity provider's signing keys are not available")
        key = self._keys.find(kid, alg)
        if key is None:
            # Maybe the IdP rotated its keys; ask again, but at most once per interval
            # (scheduled loads do not count: a rotation right after one is still seen).
            await self._refresh(self._kid_refetch_due, unknown_kid=True)
            key = self._keys.find(kid, alg)
        if key is None:
            raise Unauthenticated("the token's key id (kid) is unknown")
        return key

    def _stale(self, now: float) -> bool:
        interval = min(REFETCH_INTERVAL_S, self._settings.jwks_cache_s)
        return (
            now >= self._fetched_at + self._settings.jwks_cache_s
            and now - self._attempted_at >= interval
        )

    def _kid_refetch_due(self, now: float) -> bool:
        return now - self._kid_refetched_at >= REFETCH_INTERVAL_S

    async def _refresh(self, due: Callable[[float], bool], *, unknown_kid: bool = False) -> None:
        """Load the keys if ``due(now)`` still holds once the lock is ours (concurrent
        callers share one fetch); on failure keep the keys we have."""
        async with self._lock:
            now = self._clock()
            if not due(now):
                return
            self._attempted_at = now
            if unknown_kid:
                self._kid_refetched_at = now
            try:
                keys = await self._load()
            except _JWKSError as exc:
                logger.warning(
                    "JWKS refresh failed; keeping the previous keys", extra={"reason": str(exc)}
                )
                return
            self._install(keys, now)

    def _install(self, keys: _KeySet, now: float) -> None:
        old = self._keys
        self._keys, self._fetched_at, self._attempted_at = keys, now, now
        if old is not None and {k.fingerprint for k in old.keys} - {
            k.fingerprint for k in keys.keys
        }:
            self._tokens.clear()  # a key was withdrawn: tokens it signed must go now
        logger.info("JWKS loaded", extra={"keys": len(keys.keys)})

    async def _load(self) -> _KeySet:
        s = self._settings
        if s.jwks_file is not None:
            try:
                raw = await asyncio.to_thread(s.jwks_file.read_bytes)
            except OSError as exc:
                raise _JWKSError(f"cannot read {s.jwks_file}: {exc.strerror}") from exc
        else:
            assert s.jwks_url is not None  # checked in __init__
            raw = await self._fetch(s.jwks_url)
        return _parse_jwks(raw, self._algorithms)

    async def _fetch(self, url: str) -> bytes:
        if self._http is None:
            self._http = httpx.AsyncClient()
        try:
            async with self._http.stream(
                "GET",
                url,
                headers={"accept": "application/json"},
                timeout=self._settings.jwks_timeout_s,
                follow_redirects=False,
            ) as response:
                if response.status_code != 200:
                    raise _JWKSError(f"{url} answered {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise _JWKSError(f"{url} sent more than {MAX_JWKS_BYTES} bytes")
                return bytes(body)
        except httpx.HTTPError as exc:
            raise _JWKSError(f"cannot fetch {url}: {type(exc).__name__}") from exc


def _allowed_algorithms(configured: list[str]) -> frozenset[str]:
    refused = sorted(a for a in configured if a.lower() == "none" or a.upper().startswith("HS"))
    if refused:
        logger.warning("JWT algorithms refused: never 'none' or HMAC", extra={"refused": refused})
    unknown = sorted(set(configured) - set(_KEY_TYPES) - set(refused))
    if unknown:
        raise ConfigError(f"unsupported JWT algorithms {unknown}; choose from {sorted(_KEY_TYPES)}")
    allowed = frozenset(configured) - set(refused)
    if not allowed:
        raise ConfigError("no usable JWT algorithm: 'none' and HMAC (HS*) are always refused")
    return allowed


def _parse_jwks(raw: bytes, algorithms: frozenset[str]) -> _KeySet:
    try:
        doc = json.loads(raw)
    except ValueError as exc:  # includes UnicodeDecodeError
        raise _JWKSError("the JWKS is not JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise _JWKSError("the JWKS has no 'keys' list")
    parsed = (_parse_key(entry, algorithms) for entry in doc["keys"])
    keys = tuple(key for key in parsed if key is not None)
    if not keys:
        raise _JWKSError("the JWKS has no usable signing key")
    return _KeySet(keys)


def _parse_key(entry: object, algorithms: frozenset[str]) -> _Key | None:
    """A signing key for at least one allowed algorithm, else None. Symmetric (``oct``)
    keys and encryption keys are skipped: a JWKS is public, so they can prove nothing."""
    if not isinstance(entry, dict):
        return None
    kty, crv, kid, alg = (entry.get(n) for n in ("kty", "crv", "kid", "alg"))
    if entry.get("use", "sig") != "sig" or (kid is not None and not isinstance(kid, str)):
        return None
    by_alg: dict[str, jwt.PyJWK] = {}
    for name in sorted(algorithms):
        want_kty, curves = _KEY_TYPES[name]
        if kty != want_kty or (curves is not None and crv not in curves):
            continue
        if alg is not None and alg != name:
            continue
        try:
            by_alg[name] = jwt.PyJWK(entry, algorithm=name)
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            logger.warning("JWKS key skipped: not a valid key", extra={"kid": kid})
            return None
    if not by_alg:
        return None
    return _Key(kid, by_alg, json.dumps(entry, sort_keys=True))


def _is_tenant(value: str) -> bool:
    try:
        validate_tenant(value)
    except InvalidRequest:
        return False
    return True


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthenticated(f"the token's {name!r} claim must be a number")
    return float(value)


def _words(
    claims: Mapping[str, Any], name: str, separators: re.Pattern[str]
) -> frozenset[str] | None:
    """A claim holding a list of strings or one separated string; None when absent."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset(w for w in separators.split(value) if w)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(v for v in value if v)
    raise Unauthenticated(f"the token's {name!r} claim must be a string or a list of strings")


def _shown(alg: str) -> str:
    """An algorithm name from a token header, quoted only if it is short and plain."""
    return repr(alg) if _PRINTABLE_ALG.fullmatch(alg) else "(unprintable)"
