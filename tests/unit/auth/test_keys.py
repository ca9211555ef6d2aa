"""API keys: their format, the record stored for them (never the key), validation."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest

from ragtide.auth.keys import KEY_PREFIX, hash_key, looks_like_key, new_key
from ragtide.errors import InvalidNamespace, InvalidRequest

NOW = 1_700_000_000.0


def test_format_prefix_and_hash() -> None:
    key, record = new_key("acme", ["read"], now=NOW)
    assert re.fullmatch(r"rt_[A-Za-z0-9_-]{32}", key)
    assert looks_like_key(key)
    assert record.prefix == key[:11] and record.prefix.startswith(KEY_PREFIX)
    assert record.hash == hashlib.sha256(key.encode()).hexdigest() == hash_key(key)
    assert record.tenant == "acme"
    assert re.fullmatch(r"key_[0-9a-f]{16}", record.id)
    assert record.created_at == NOW
    assert record.expires_at is None and record.revoked_at is None
    assert record.namespaces is None


def test_the_record_never_contains_the_key() -> None:
    key, record = new_key("acme", ["read", "write"], description="ci", now=NOW)
    for value in dataclasses.asdict(record).values():
        assert key not in str(value)
        assert key[11:] not in str(value)  # nor the secret part of it
    assert key not in repr(record)


def test_keys_and_ids_are_unique() -> None:
    made = [new_key("acme", ["read"], now=NOW) for _ in range(200)]
    assert len({k for k, _ in made}) == 200
    assert len({r.id for _, r in made}) == 200
    assert len({r.hash for _, r in made}) == 200


@pytest.mark.parametrize(
    "token, expected",
    [
        ("rt_" + "a" * 32, True),
        ("rt_" + "a" * 31, False),
        ("rt_" + "a" * 33, False),
        ("RT_" + "a" * 32, False),
        ("xx_" + "a" * 32, False),
        ("a" * 35, False),
        ("", False),
    ],
)
def test_looks_like_key(token: str, expected: bool) -> None:
    assert looks_like_key(token) is expected


def test_scopes_are_deduplicated_in_order() -> None:
    _, record = new_key("acme", ["write", "read", "write"], now=NOW)
    assert record.scopes == ("write", "read")
    _, record = new_key("acme", iter(["admin"]), now=NOW)
    assert record.scopes == ("admin",)


@pytest.mark.parametrize("scopes", [[], ["root"], ["read", "Read"], ["read", ""]])
def test_bad_scopes_are_refused(scopes: list[str]) -> None:
    with pytest.raises(InvalidRequest) as info:
        new_key("acme", scopes, now=NOW)
    assert "scopes must be a non-empty subset" in info.value.message


def test_namespaces_are_validated_sorted_and_deduplicated() -> None:
    _, record = new_key("acme", ["read"], namespaces=["kb", "docs", "kb"], now=NOW)
    assert record.namespaces == ("docs", "kb")
    with pytest.raises(InvalidNamespace):
        new_key("acme", ["read"], namespaces=["docs", "../etc"], now=NOW)
    with pytest.raises(InvalidRequest) as info:
        new_key("acme", ["read"], namespaces=[], now=NOW)
    assert "at least one namespace" in info.value.message


def test_expiry_must_be_in_the_future() -> None:
    for past in (NOW, NOW - 1):
        with pytest.raises(InvalidRequest) as info:
            new_key("acme", ["read"], expires_at=past, now=NOW)
        assert "future" in info.value.message
    _, record = new_key("acme", ["read"], expires_at=NOW + 1, now=NOW)
    assert record.expires_at == NOW + 1


def test_description_is_capped() -> None:
    _, record = new_key("acme", ["read"], description="d" * 500, now=NOW)
    assert record.description == "d" * 200
