"""JWTVerifier with real keys (RSA and EC, made here) and a real JWKS server on 127.0.0.1.

Time is a ``FakeClock`` handed to the verifier; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from ragtide.auth.jwt import JWTVerifier, looks_like_jwt
from ragtide.errors import BackendUnavailable, ConfigError, Unauthenticated
from ragtide.settings import JWTSettings
from ragtide.types import Principal

ISSUER = "https://idp.example"
AUDIENCE = "ragtide"
T0 = 1_700_000_000.0


# --- fixtures: keys, a clock, a JWKS server ---------------------------------------------


@dataclass(frozen=True)
class Keys:
    rsa1: rsa.RSAPrivateKey  # kid "r1"
    rsa2: rsa.RSAPrivateKey  # kid "r2", published only after a rotation
    ec1: ec.EllipticCurvePrivateKey  # kid "e1"
    rogue: rsa.RSAPrivateKey  # never published


@pytest.fixture(scope="module")
def keys() -> Keys:
    def new_rsa() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return Keys(new_rsa(), new_rsa(), ec.generate_private_key(ec.SECP256R1()), new_rsa())


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str | None) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        data = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    data["use"] = "sig"
    if kid is not None:
        data["kid"] = kid
    return data


def jwks(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(entries)}


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class JWKSServer:
    """Serves ``self.jwks`` on 127.0.0.1 and counts the requests it answered."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.jwks = document
        self.hits = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer._lock:
                    outer.hits += 1
                body = json.dumps(outer.jwks).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._running = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()


@pytest.fixture
def server(keys: Keys) -> Iterator[JWKSServer]:
    srv = JWKSServer(jwks(jwk(keys.rsa1, "r1"), jwk(keys.ec1, "e1")))
    yield srv
    srv.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def settings(url: str | None = None, **overrides: Any) -> JWTSettings:
    values: dict[str, Any] = {
        "jwks_url": url,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "leeway_s": 30,
        **overrides,
    }
    return JWTSettings(**values)


@asynccontextmanager
async def running(config: JWTSettings, clock: FakeClock) -> AsyncIterator[JWTVerifier]:
    verifier = JWTVerifier(config, clock=clock)
    await verifier.start()
    try:
        yield verifier
    finally:
        await verifier.aclose()


def make_token(
    key: Any,
    kid: str | None = "r1",
    *,
    alg: str = "RS256",
    now: float = T0,
    **claims: Any,
) -> str:
    """A token valid for 10 minutes from ``now``; a claim given as None is left out."""
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "tenant": "acme",
        "iat": int(now),
        "exp": int(now) + 600,
        **claims,
    }
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


async def rejected(verifier: JWTVerifier, token: str, match: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated, match=match) as info:
        await verifier.verify(token)
    message = str(info.value)
    assert token not in message and token.split(".")[1] not in message
    return info.value


# --- valid tokens -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_rs256_token_becomes_a_principal(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    async with running(settings(server.url), clock) as verifier:
        token = make_token(keys.rsa1, scope="read write", groups=["staff"])
        principal = await verifier.verify(token)
    assert principal == Principal(
        tenant="acme",
        subject="jwt:alice",
        scopes=frozenset({"read", "write"}),
        kind="jwt",
        key_id=None,
        groups=frozenset({"staff"}),
        expires_at=T0 + 600,
    )
    assert principal.namespaces is None


@pytest.mark.anyio
async def test_es256_token_becomes_a_principal(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    async with running(settings(server.url), clock) as verifier:
        principal = await verifier.verify(
            make_token(keys.ec1, "e1", alg="ES256", sub="bob", tenant="beta-2")
        )
    assert (principal.tenant, principal.subject, principal.kind) == ("beta-2", "jwt:bob", "jwt")
    assert principal.scopes == frozenset({"read"})  # default_scopes: the token has none


@pytest.mark.anyio
async def test_no_issuer_or_audience_configured_skips_those_checks(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    config = settings(server.url, issuer=None, audience=None)
    async with running(config, clock) as verifier:
        principal = await verifier.verify(make_token(keys.rsa1, iss="anyone", aud="other"))
    assert principal.tenant == "acme"


# --- time -------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"exp": int(T0) - 31}, "expired"),
        ({"nbf": int(T0) + 31}, r"not valid yet \(nbf\)"),
        ({"iat": int(T0) + 31}, r"issued in the future \(iat\)"),
        ({"exp": "tomorrow"}, "'exp' claim must be a number"),
    ],
)
async def test_times_beyond_the_leeway_are_refused(
    keys: Keys, server: JWKSServer, clock: FakeClock, claims: dict[str, Any], error: str
) -> None:
    async with running(settings(server.url), clock) as verifier:
        await rejected(verifier, make_token(keys.rsa1, **claims), error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "claims",
    [{"exp": int(T0) - 29}, {"nbf": int(T0) + 29}, {"iat": int(T0) + 29}],
)
async def test_times_inside_the_leeway_are_accepted(
    keys: Keys, server: JWKSServer, clock: FakeClock, claims: dict[str, Any]
) -> None:
    async with running(settings(server.url), clock) as verifier:
        assert (await verifier.verify(make_token(keys.rsa1, **claims))).tenant == "acme"


@pytest.mark.anyio
async def test_a_cached_token_is_rechecked_for_expiry(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    async with running(settings(server.url, leeway_s=0), clock) as verifier:
        token = make_token(keys.rsa1, exp=int(T0) + 120)
        first = await verifier.verify(token)
        assert await verifier.verify(token) is first  # served from the cache
        clock.advance(59)
        assert await verifier.verify(token) is first
        clock.advance(2)  # past the cache's 60 s: verified again, still valid
        assert (await verifier.verify(token)).expires_at == T0 + 120
        clock.advance(60)  # T0 + 121: past exp, though verified 60 s ago
        await rejected(verifier, token, "expired")


# --- claims -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"iss": "https://evil.example"}, r"issuer \(iss\) is not accepted"),
        ({"iss": None}, "no 'iss' claim"),
        ({"aud": "someone-else"}, r"audience \(aud\) is not accepted"),
        ({"aud": None}, "no 'aud' claim"),
        ({"tenant": None}, "no 'tenant' claim"),
        ({"sub": None}, "no 'sub' claim"),
        ({"exp": None}, "no 'exp' claim"),
        ({"tenant": "Not_A_Tenant!"}, "'tenant' claim is not a valid tenant id"),
        ({"tenant": 42}, "'tenant' claim is not a valid tenant id"),
        ({"scope": 7}, "'scope' claim must be a string or a list of strings"),
        ({"groups": ["a", 1]}, "'groups' claim must be a string or a list of strings"),
    ],
)
async def test_bad_claims_are_named(
    keys: Keys, server: JWKSServer, clock: FakeClock, claims: dict[str, Any], error: str
) -> None:
    async with running(settings(server.url), clock) as verifier:
        await rejected(verifier, make_token(keys.rsa1, **claims), error)


@pytest.mark.anyio
async def test_the_tenant_claim_is_configurable(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    config = settings(server.url, tenant_claim="https://ragtide/tenant")
    async with running(config, clock) as verifier:
        custom: dict[str, Any] = {"https://ragtide/tenant": "org-7"}
        token = make_token(keys.rsa1, tenant=None, **custom)
        assert (await verifier.verify(token)).tenant == "org-7"
        await rejected(verifier, make_token(keys.rsa1), "no 'https://ragtide/tenant' claim")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("claims", "scopes", "groups"),
    [
        ({"scope": "openid read write"}, {"read", "write"}, set()),
        ({"scope": ["admin", "profile"]}, {"admin"}, set()),
        ({"scope": ""}, set(), set()),  # present but empty: no scopes, not the defaults
        ({"groups": "staff legal,ops, ,"}, {"read"}, {"staff", "legal", "ops"}),
        ({"groups": ["staff", "legal"]}, {"read"}, {"staff", "legal"}),
        ({"groups": []}, {"read"}, set()),
    ],
)
async def test_scopes_and_groups(
    keys: Keys,
    server: JWKSServer,
    clock: FakeClock,
    claims: dict[str, Any],
    scopes: set[str],
    groups: set[str],
) -> None:
    async with running(settings(server.url), clock) as verifier:
        principal = await verifier.verify(make_token(keys.rsa1, **claims))
    assert principal.scopes == scopes
    assert principal.groups == groups
    assert isinstance(principal.groups, frozenset)


@pytest.mark.anyio
async def test_scope_and_group_claims_and_defaults_are_configurable(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    config = settings(
        server.url, scopes_claim="scp", groups_claim="roles", default_scopes=["read", "write"]
    )
    async with running(config, clock) as verifier:
        named = await verifier.verify(make_token(keys.rsa1, scp=["admin"], roles="a,b"))
        bare = await verifier.verify(make_token(keys.rsa1, scope="admin", groups=["x"]))
    assert (named.scopes, named.groups) == (frozenset({"admin"}), frozenset({"a", "b"}))
    assert (bare.scopes, bare.groups) == (frozenset({"read", "write"}), frozenset())


# --- signatures and algorithms ----------------------------------------------------------


@pytest.mark.anyio
async def test_a_tampered_payload_fails_the_signature(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    header, payload, signature = make_token(keys.rsa1).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["tenant"] = "victim"
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    async with running(settings(server.url), clock) as verifier:
        await rejected(verifier, forged, "signature does not verify")


@pytest.mark.anyio
async def test_a_token_signed_by_an_unknown_key(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    async with running(settings(server.url), clock) as verifier:
        await rejected(verifier, make_token(keys.rogue, "r1"), "signature does not verify")
        await rejected(verifier, make_token(keys.rogue, "rogue"), r"key id \(kid\) is unknown")


@pytest.mark.anyio
async def test_alg_none_is_refused(keys: Keys, server: JWKSServer, clock: FakeClock) -> None:
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "tenant": "acme", "exp": T0 + 60}
    config = settings(server.url, algorithms=["RS256", "none"])  # refused even if configured
    async with running(config, clock) as verifier:
        for alg in ("none", "None", "NONE"):
            token = unsigned({"alg": alg, "kid": "r1"}, payload) + "."
            assert looks_like_jwt(token)
            await rejected(verifier, token, f"algorithm '{alg}' is not allowed")
        await rejected(verifier, unsigned({"kid": "r1"}, payload) + ".", "names no algorithm")


@pytest.mark.anyio
async def test_hs256_signed_with_the_public_key_is_refused(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    """The classic key confusion: HMAC keyed with the published public key's bytes."""
    public = keys.rsa1.public_key()
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "tenant": "acme", "exp": T0 + 60}
    config = settings(server.url, algorithms=["RS256", "HS256"])  # even if configured
    async with running(config, clock) as verifier:
        for secret in (
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            json.dumps(jwk(keys.rsa1, "r1")).encode(),
        ):
            signing_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": "r1"}, payload)
            mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
            await rejected(verifier, f"{signing_input}.{b64(mac)}", "'HS256' is not allowed")


def test_only_hmac_or_unknown_algorithms_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no usable JWT algorithm"):
        JWTVerifier(settings("https://idp.example/jwks", algorithms=["HS256", "none"]))
    with pytest.raises(ConfigError, match="unsupported JWT algorithms"):
        JWTVerifier(settings("https://idp.example/jwks", algorithms=["RS256", "XS999"]))


@pytest.mark.anyio
async def test_alg_must_be_allowed_and_fit_the_key(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    async with running(settings(server.url, algorithms=["RS256", "ES256"]), clock) as verifier:
        # EC-signed, but naming the RSA key: alg and key type disagree.
        mismatch = make_token(keys.ec1, "r1", alg="ES256")
        await rejected(verifier, mismatch, "'ES256' does not match the token's signing key")
        # A real RSA signature with an algorithm that is not configured.
        await rejected(verifier, make_token(keys.rsa1, alg="PS256"), "'PS256' is not allowed")
    async with running(settings(server.url, algorithms=["PS256"]), clock) as verifier:
        assert (await verifier.verify(make_token(keys.rsa1, alg="PS256"))).tenant == "acme"


@pytest.mark.anyio
async def test_a_token_without_kid_needs_a_single_key(
    keys: Keys, server: JWKSServer, clock: FakeClock, tmp_path: Path
) -> None:
    async with running(settings(server.url), clock) as verifier:  # two keys published
        await rejected(verifier, make_token(keys.rsa1, None), "names no key id")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(jwk(keys.rsa1, "only"))))
    async with running(settings(jwks_file=path), clock) as verifier:
        assert (await verifier.verify(make_token(keys.rsa1, None))).subject == "jwt:alice"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("token", "error"),
    [
        ("", "malformed"),
        ("rt_abc123", "malformed"),
        ("a.b", "malformed"),
        ("a.b.c.d", "malformed"),
        ("a b.c.d", "malformed"),
        ("e30.e30.", "names no algorithm"),  # the header {} is JSON, but without alg
        ("xxx.yyy.zzz", "malformed"),
        ("a." + "b" * 20_000 + ".c", "too long"),
    ],
)
async def test_malformed_tokens(
    server: JWKSServer, clock: FakeClock, token: str, error: str
) -> None:
    async with running(settings(server.url), clock) as verifier:
        with pytest.raises(Unauthenticated, match=error):
            await verifier.verify(token)


# --- the JWKS: rotation, floods, outages, files -----------------------------------------


@pytest.mark.anyio
async def test_a_rotated_key_is_fetched_once_and_accepted(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    async with running(settings(server.url), clock) as verifier:
        assert server.hits == 1
        server.jwks = jwks(jwk(keys.rsa1, "r1"), jwk(keys.rsa2, "r2"))
        assert (await verifier.verify(make_token(keys.rsa2, "r2"))).tenant == "acme"
        assert server.hits == 2
        assert (await verifier.verify(make_token(keys.rsa2, "r2", sub="bob"))).tenant == "acme"
        assert (await verifier.verify(make_token(keys.rsa1, "r1"))).tenant == "acme"
        assert server.hits == 2


@pytest.mark.anyio
async def test_a_flood_of_unknown_kids_refetches_at_most_once_per_30_s(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    async with running(settings(server.url), clock) as verifier:
        forged = [make_token(keys.rogue, f"forged-{i}") for i in range(50)]
        results = await asyncio.gather(
            *(verifier.verify(t) for t in forged), return_exceptions=True
        )
        assert all(isinstance(r, Unauthenticated) for r in results)
        for token in forged:
            await rejected(verifier, token, "unknown")
        assert server.hits == 2  # start() and one refetch
        clock.advance(29)
        await rejected(verifier, make_token(keys.rogue, "forged-x"), "unknown")
        assert server.hits == 2
        clock.advance(2)
        await rejected(verifier, make_token(keys.rogue, "forged-y"), "unknown")
        assert server.hits == 3


@pytest.mark.anyio
async def test_keys_are_refreshed_after_jwks_cache_s(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    async with running(settings(server.url, jwks_cache_s=300), clock) as verifier:
        old = make_token(keys.rsa1, "r1", exp=int(T0) + 3600)
        await verifier.verify(old)
        server.jwks = jwks(jwk(keys.rsa2, "r2"))  # r1 withdrawn
        clock.advance(299)
        await verifier.verify(make_token(keys.rsa1, "r1", now=clock.now))
        assert server.hits == 1
        clock.advance(2)
        new = make_token(keys.rsa2, "r2", now=clock.now)
        assert (await verifier.verify(new)).tenant == "acme"
        assert server.hits == 2
        await rejected(verifier, old, "unknown")  # also dropped from the token cache


@pytest.mark.anyio
async def test_when_the_jwks_server_is_down_the_old_keys_still_work(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    async with running(settings(server.url, jwks_cache_s=60), clock) as verifier:
        server.stop()
        await rejected(verifier, make_token(keys.rsa2, "r2"), "unknown")  # refetch failed
        assert (await verifier.verify(make_token(keys.rsa1, "r1"))).tenant == "acme"
        clock.advance(120)  # the keys are stale and the refresh fails: keep them
        token = make_token(keys.rsa1, "r1", now=clock.now, sub="carol")
        assert (await verifier.verify(token)).subject == "jwt:carol"
        assert server.hits == 1


@pytest.mark.anyio
async def test_an_unreachable_idp_at_start_is_retried_later(
    keys: Keys, server: JWKSServer, clock: FakeClock
) -> None:
    url = server.url
    server.stop()
    async with running(settings(url), clock) as verifier:  # start() does not raise
        with pytest.raises(BackendUnavailable):
            await verifier.verify(make_token(keys.rsa1))


@pytest.mark.anyio
async def test_a_jwks_file_is_read_and_reread_for_a_new_kid(
    keys: Keys, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(jwk(keys.ec1, "e1"))))
    async with running(settings(jwks_file=path), clock) as verifier:
        assert (await verifier.verify(make_token(keys.ec1, "e1", alg="ES256"))).tenant == "acme"
        path.write_text(json.dumps(jwks(jwk(keys.ec1, "e1"), jwk(keys.rsa2, "r2"))))
        assert (await verifier.verify(make_token(keys.rsa2, "r2"))).tenant == "acme"


@pytest.mark.anyio
async def test_a_missing_or_unusable_jwks_file_is_a_config_error(
    keys: Keys, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "jwks.json"
    with pytest.raises(ConfigError, match="cannot load the JWKS file"):
        await JWTVerifier(settings(jwks_file=path), clock=clock).start()
    secret = {"kty": "oct", "kid": "s", "k": b64(b"a shared secret, published")}
    path.write_text(json.dumps(jwks(secret)))  # symmetric keys are never trusted
    with pytest.raises(ConfigError, match="no usable signing key"):
        await JWTVerifier(settings(jwks_file=path), clock=clock).start()


def test_exactly_one_key_source_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        JWTVerifier(JWTSettings())
    with pytest.raises(ConfigError, match="exactly one"):
        JWTVerifier(settings("https://idp.example/jwks", jwks_file=tmp_path / "jwks.json"))


def test_looks_like_jwt(keys: Keys) -> None:
    assert looks_like_jwt(make_token(keys.rsa1))
    assert looks_like_jwt("eyJhbGciOiJub25lIn0.e30.")
    for other in ("rt_abc.def.ghi", "rt_0123456789abcdef", "", "a.b", "a.b.c.d", "a+b.c.d"):
        assert not looks_like_jwt(other)
    assert not looks_like_jwt("a." + "b" * 20_000 + ".c")
