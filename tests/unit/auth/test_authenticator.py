"""Authenticator: headers to principals, the admin key, cached key checks, JWTs.

Keys live in a real SQLiteStore (tmp_path) wrapped to count lookups; tenants go through
a real TenantDirectory. Both caches run on injected clocks; nothing sleeps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ragtide.auth.authenticator import ANONYMOUS, Authenticator
from ragtide.auth.keys import hash_key, new_key
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.errors import ConfigError, Unauthenticated
from ragtide.settings import AuthSettings, Settings
from ragtide.tenants import TenantDirectory
from ragtide.types import SCOPES, Principal

ADMIN_KEY = "adm-" + "k" * 28
INVALID = "invalid or expired credential"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingStore:
    def __init__(self, inner: SQLiteStore) -> None:
        self.inner = inner
        self.lookups: list[str] = []

    async def key_by_hash(self, key_hash: str) -> Any:
        self.lookups.append(key_hash)
        return await self.inner.key_by_hash(key_hash)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FakeJWT:
    def __init__(self, principal: Principal | Exception) -> None:
        self.result = principal
        self.tokens: list[str] = []
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.closed = True

    async def verify(self, token: str) -> Principal:
        self.tokens.append(token)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@dataclasses.dataclass
class Env:
    store: CountingStore
    clock: Clock  # the authenticator's (wall time)
    tenant_clock: Clock  # the directory's record cache
    directory: TenantDirectory

    def auth(self, jwt: FakeJWT | None = None, **settings: Any) -> Authenticator:
        return Authenticator(
            AuthSettings(**settings),
            self.store,
            self.directory,
            jwt=jwt,  # type: ignore[arg-type]
            clock=self.clock,
        )

    async def key(self, tenant: str = "acme", **fields: Any) -> tuple[str, Any]:
        key, record = new_key(tenant, fields.pop("scopes", ["read"]), now=self.clock(), **fields)
        await self.store.inner.add_key(record)
        return key, record

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.tenant_clock.now += seconds


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    inner = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db.sqlite"))
    await inner.start()
    store = CountingStore(inner)
    tenant_clock = Clock(0.0)
    base = SimpleNamespace(settings=Settings(data_dir=tmp_path))
    directory = TenantDirectory(base, store, None, clock=tenant_clock)  # type: ignore[arg-type]
    await inner.put_tenant("acme", {"id": "acme"}, "s")
    yield Env(store, Clock(), tenant_clock, directory)
    await inner.aclose()


def bearer(token: str) -> str:
    return f"Bearer {token}"


# --- modes -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_disabled_without_a_header_is_anonymous(env: Env) -> None:
    auth = env.auth()
    await auth.start()
    assert not auth.enabled
    for header in (None, ""):
        principal = await auth.authenticate(header)
        assert principal is ANONYMOUS
    assert ANONYMOUS.tenant == "default" and ANONYMOUS.kind == "anonymous"
    assert ANONYMOUS.scopes == frozenset(SCOPES)
    assert env.store.lookups == []


@pytest.mark.anyio
async def test_disabled_still_checks_a_header(env: Env) -> None:
    auth = env.auth()
    key, record = await env.key(scopes=["write"])
    principal = await auth.authenticate(bearer(key))
    assert (principal.tenant, principal.kind, principal.key_id) == ("acme", "key", record.id)
    assert principal.scopes == frozenset({"write"})  # not every scope
    with pytest.raises(Unauthenticated, match=INVALID):
        await auth.authenticate(bearer("rt_" + "x" * 32))
    with pytest.raises(Unauthenticated):
        await auth.authenticate("Basic dXNlcjpwYXNz")


@pytest.mark.anyio
async def test_enabled_needs_a_credential(env: Env) -> None:
    auth = env.auth(enabled=True)
    assert auth.enabled
    for header in (None, ""):
        with pytest.raises(Unauthenticated, match="needs a credential"):
            await auth.authenticate(header)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Token rt_" + "a" * 32, "Bearer", "Bearer    ", "rt_" + "a" * 32],
)
async def test_other_schemes_are_refused(env: Env, header: str) -> None:
    auth = env.auth(enabled=True)
    with pytest.raises(Unauthenticated, match="use Authorization: Bearer"):
        await auth.authenticate(header)
    assert env.store.lookups == []


@pytest.mark.anyio
async def test_the_scheme_is_case_insensitive_and_the_token_trimmed(env: Env) -> None:
    auth = env.auth(enabled=True)
    key, _ = await env.key()
    for header in (f"bearer {key}", f"BEARER {key}", f"Bearer  {key} "):
        assert (await auth.authenticate(header)).tenant == "acme"


# --- the admin key -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_admin_key(env: Env) -> None:
    auth = env.auth(enabled=True, admin_key=ADMIN_KEY)
    await auth.start()
    principal = await auth.authenticate(bearer(ADMIN_KEY))
    assert principal.kind == "admin" and principal.platform_admin
    assert principal.tenant == "default" and principal.scopes == frozenset(SCOPES)
    assert env.store.lookups == []
    with pytest.raises(Unauthenticated, match=INVALID):
        await auth.authenticate(bearer(ADMIN_KEY + "x"))
    with pytest.raises(Unauthenticated):
        await auth.authenticate(bearer(ADMIN_KEY[:-1]))


@pytest.mark.anyio
async def test_the_admin_key_needs_start(env: Env) -> None:
    auth = env.auth(enabled=True, admin_key=ADMIN_KEY)
    with pytest.raises(Unauthenticated):
        await auth.authenticate(bearer(ADMIN_KEY))


@pytest.mark.anyio
async def test_the_admin_key_file(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "admin-key"
    path.write_text(ADMIN_KEY + "\n", encoding="utf-8")
    auth = env.auth(enabled=True, admin_key="z" * 30, admin_key_file=path)
    await auth.start()
    assert (await auth.authenticate(bearer(ADMIN_KEY))).kind == "admin"
    with pytest.raises(Unauthenticated):  # the file wins over admin_key
        await auth.authenticate(bearer("z" * 30))


@pytest.mark.anyio
async def test_a_missing_admin_key_file_is_a_config_error(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        await env.auth(admin_key_file=path).start()
    assert str(path) in info.value.message


@pytest.mark.anyio
async def test_a_short_admin_key_is_a_config_error(env: Env, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 24 characters"):
        await env.auth(admin_key="k" * 23).start()
    await env.auth(admin_key="k" * 24).start()
    path = tmp_path / "short"
    path.write_text("  " + "k" * 23 + "  \n", encoding="utf-8")  # stripped: 23
    with pytest.raises(ConfigError, match="at least 24 characters"):
        await env.auth(admin_key_file=path).start()


# --- API keys ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_key_becomes_its_principal(env: Env) -> None:
    auth = env.auth(enabled=True)
    key, record = await env.key(
        scopes=["read", "admin"], namespaces=["docs", "kb"], expires_at=T0 + 100
    )
    principal = await auth.authenticate(bearer(key))
    assert principal == Principal(
        tenant="acme",
        subject=f"key:{record.id}",
        scopes=frozenset({"read", "admin"}),
        kind="key",
        key_id=record.id,
        namespaces=frozenset({"docs", "kb"}),
        expires_at=T0 + 100,
    )
    assert env.store.lookups == [hash_key(key)]


@pytest.mark.anyio
async def test_key_checks_are_cached_for_cache_seconds(env: Env) -> None:
    auth = env.auth(enabled=True, cache_seconds=3)
    key, record = await env.key()
    await auth.authenticate(bearer(key))
    await auth.authenticate(bearer(key))
    assert len(env.store.lookups) == 1
    assert await env.store.inner.revoke_key("acme", record.id, env.clock())
    env.advance(2.99)
    assert (await auth.authenticate(bearer(key))).key_id == record.id  # not yet
    assert len(env.store.lookups) == 1
    env.advance(0.01)
    with pytest.raises(Unauthenticated, match=INVALID):
        await auth.authenticate(bearer(key))
    assert len(env.store.lookups) == 2


@pytest.mark.anyio
async def test_unknown_keys_are_cached_too(env: Env) -> None:
    auth = env.auth(enabled=True)
    unknown = "rt_" + "u" * 32
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(bearer(unknown))
    assert len(env.store.lookups) == 1


@pytest.mark.anyio
async def test_forget_drops_a_cached_check(env: Env) -> None:
    auth = env.auth(enabled=True)
    key, record = await env.key()
    await auth.authenticate(bearer(key))
    await env.store.inner.revoke_key("acme", record.id, env.clock())
    auth.forget(record.hash)
    with pytest.raises(Unauthenticated):
        await auth.authenticate(bearer(key))
    auth.forget("not-cached")  # no error


@pytest.mark.anyio
async def test_the_cache_is_bounded_lru(env: Env) -> None:
    auth = env.auth(enabled=True, cache_entries=2)
    (a, ra), (b, rb), (c, rc) = [await env.key() for _ in range(3)]
    await auth.authenticate(bearer(a))
    await auth.authenticate(bearer(b))
    await auth.authenticate(bearer(a))  # a is now the most recently used
    assert env.store.lookups == [ra.hash, rb.hash]
    await auth.authenticate(bearer(c))  # evicts b, the least recently used
    await auth.authenticate(bearer(a))
    assert env.store.lookups == [ra.hash, rb.hash, rc.hash]
    await auth.authenticate(bearer(b))
    assert env.store.lookups == [ra.hash, rb.hash, rc.hash, rb.hash]
    # c was used less recently than a: b's read evicted c.
    await auth.authenticate(bearer(a))
    assert len(env.store.lookups) == 4
    await auth.authenticate(bearer(c))
    assert env.store.lookups[-1] == rc.hash and len(env.store.lookups) == 5


@pytest.mark.anyio
async def test_one_message_for_every_bad_key(env: Env) -> None:
    auth = env.auth(enabled=True)
    revoked, r1 = await env.key()
    await env.store.inner.revoke_key("acme", r1.id, env.clock())
    expiring, _ = await env.key(expires_at=T0 + 10)
    env.advance(10)  # expires_at == now: expired
    unknown = "rt_" + "q" * 32
    messages = set()
    for token in (revoked, expiring, unknown, "not-a-key", "rt_short", "a.b.c"):
        with pytest.raises(Unauthenticated) as info:
            await auth.authenticate(bearer(token))
        messages.add(info.value.message)
    assert messages == {INVALID}


@pytest.mark.anyio
async def test_a_key_expires_while_cached(env: Env) -> None:
    auth = env.auth(enabled=True, cache_seconds=5)
    key, _ = await env.key(expires_at=T0 + 1)
    await auth.authenticate(bearer(key))
    env.advance(1)
    with pytest.raises(Unauthenticated, match=INVALID):
        await auth.authenticate(bearer(key))
    assert len(env.store.lookups) == 1  # from the cache: the expiry is checked anyway


@pytest.mark.anyio
async def test_a_key_of_a_disabled_tenant_is_refused(env: Env) -> None:
    auth = env.auth(enabled=True)
    key, _ = await env.key()
    assert (await auth.authenticate(bearer(key))).tenant == "acme"
    await env.store.inner.put_tenant("acme", {"id": "acme", "disabled": True}, "s")
    env.advance(5)  # past both caches
    with pytest.raises(Unauthenticated, match=INVALID):
        await auth.authenticate(bearer(key))


@pytest.mark.anyio
async def test_a_key_of_a_deleted_or_unknown_tenant_is_refused(env: Env) -> None:
    auth = env.auth(enabled=True)
    orphan, _ = await env.key("ghost")  # a key whose tenant has no record
    with pytest.raises(Unauthenticated, match=INVALID):
        await auth.authenticate(bearer(orphan))
    key, _ = await env.key()
    await auth.authenticate(bearer(key))
    await env.store.inner.delete_tenant("acme")
    env.advance(5)
    with pytest.raises(Unauthenticated, match=INVALID):
        await auth.authenticate(bearer(key))


@pytest.mark.anyio
async def test_a_key_of_the_default_tenant_needs_no_record(env: Env) -> None:
    auth = env.auth(enabled=True)
    key, _ = await env.key("default")
    assert (await auth.authenticate(bearer(key))).tenant == "default"


# --- JWTs --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_jwt_goes_to_the_verifier(env: Env) -> None:
    user = Principal("acme", "alice", frozenset({"read"}), kind="jwt")
    jwt = FakeJWT(user)
    auth = env.auth(jwt=jwt, enabled=True)
    await auth.start()
    assert jwt.started
    assert await auth.authenticate(bearer("h.p.s")) is user
    assert jwt.tokens == ["h.p.s"]
    assert env.store.lookups == []
    for token in ("h.p", "h.p.s.x", "plain"):  # not shaped like a JWT: never verified
        with pytest.raises(Unauthenticated, match=INVALID):
            await auth.authenticate(bearer(token))
    assert jwt.tokens == ["h.p.s"]
    await auth.aclose()
    assert jwt.closed


@pytest.mark.anyio
async def test_a_jwt_error_propagates_and_an_unknown_tenant_is_refused(env: Env) -> None:
    auth = env.auth(jwt=FakeJWT(Unauthenticated("token expired")), enabled=True)
    with pytest.raises(Unauthenticated, match="token expired"):
        await auth.authenticate(bearer("h.p.s"))
    stranger = Principal("ghost", "bob", frozenset({"read"}), kind="jwt")
    auth = env.auth(jwt=FakeJWT(stranger), enabled=True)
    with pytest.raises(Unauthenticated, match=INVALID):
        await auth.authenticate(bearer("h.p.s"))


@pytest.mark.anyio
async def test_without_a_verifier_a_jwt_is_an_invalid_credential(env: Env) -> None:
    with pytest.raises(Unauthenticated, match=INVALID):
        await env.auth(enabled=True).authenticate(bearer("h.p.s"))
