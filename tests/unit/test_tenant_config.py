"""TenantConfig: ids, strict fields, plain-text secrets refused, secret references resolved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ragtide.errors import ConfigError
from ragtide.tenant_config import TenantConfig, resolve_secrets


def config(**fields: Any) -> TenantConfig:
    return TenantConfig.model_validate({"id": "acme", **fields})


def _messages(exc: ValidationError) -> str:
    return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


# --- ids and fields --------------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["a", "acme", "acme-2", "0", "a" * 63, "1-a"])
def test_valid_ids(tenant: str) -> None:
    assert TenantConfig(id=tenant).id == tenant


@pytest.mark.parametrize(
    "tenant", ["", "Acme", "-acme", "acme-", "a_b", "a.b", "a/b", "a" * 64, "acme ", "ä"]
)
def test_invalid_ids_are_refused_naming_the_field(tenant: str) -> None:
    with pytest.raises(ValidationError) as info:
        TenantConfig(id=tenant)
    [error] = info.value.errors()
    assert error["loc"] == ("id",)
    assert "invalid tenant id" in error["msg"]


@pytest.mark.parametrize(
    "data, loc",
    [
        ({"colour": "red"}, ("colour",)),
        ({"quotas": {"searches": 3}}, ("quotas", "searches")),
        ({"retrieval": {"topk": 3}}, ("retrieval", "topk")),
    ],
)
def test_extra_fields_are_refused(data: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        config(**data)
    assert [e["loc"] for e in info.value.errors()] == [loc]
    assert info.value.errors()[0]["type"] == "extra_forbidden"


def test_limits_of_overrides() -> None:
    assert config(retrieval={"top_k": 100}).retrieval.top_k == 100
    for bad in (
        {"retrieval": {"top_k": 0}},
        {"retrieval": {"top_k": 101}},
        {"quotas": {"documents": -1}},
        {"retrieval": {"vector_weight": 1.5}},
    ):
        with pytest.raises(ValidationError):
            config(**bad)
    with pytest.raises(ValidationError):
        config(policies=[{"use": "groups"}] * 17)
    assert len(config(policies=[{"use": "groups"}] * 16).policies) == 16


def test_plugin_names_lists_every_chosen_plugin_in_order() -> None:
    c = config(
        retriever={"use": "r"},
        chat_model={"use": "c"},
        intent={"use": "i"},
        policies=[{"use": "p1"}, {"use": "p2"}],
    )
    assert c.plugin_names() == ["r", "c", "i", "p1", "p2"]
    assert config().plugin_names() == []
    assert config(chat_model={"use": "c"}).plugin_names() == ["c"]


# --- plain-text secrets ----------------------------------------------------------------

SECRET_KEYS = ["api_key", "apikey", "API_KEY", "client_secret", "password", "token", "auth_token"]


@pytest.mark.parametrize("key", SECRET_KEYS)
@pytest.mark.parametrize("field", ["retriever", "chat_model", "intent"])
def test_a_plain_secret_is_refused_in_every_spec(field: str, key: str) -> None:
    with pytest.raises(ValidationError) as info:
        config(**{field: {"use": "plug", "config": {key: "sk-live-123"}}})
    text = _messages(info.value)
    assert f"config.{key} looks like a secret" in text
    assert "sk-live-123" not in text  # the error never repeats the secret


def test_a_plain_secret_is_refused_in_a_policy() -> None:
    with pytest.raises(ValidationError) as info:
        config(policies=[{"use": "ok"}, {"use": "opa", "config": {"token": "abc"}}])
    assert "opa: config.token looks like a secret" in _messages(info.value)


def test_a_plain_secret_is_refused_at_any_dict_depth() -> None:
    nested = {"auth": {"oauth": {"client_secret": "plain"}}}
    with pytest.raises(ValidationError) as info:
        config(chat_model={"use": "llm", "config": nested})
    assert "config.auth.oauth.client_secret looks like a secret" in _messages(info.value)


def test_a_plain_secret_inside_a_list_is_refused() -> None:
    with pytest.raises(ValidationError):
        config(chat_model={"use": "llm", "config": {"headers": [{"api_key": "sk-plain"}]}})


def test_a_non_string_plain_secret_is_refused() -> None:
    with pytest.raises(ValidationError):
        config(retriever={"use": "r", "config": {"password": 123456}})


@pytest.mark.parametrize("ref", ["${env:ACME_KEY}", "${file:/run/secrets/acme}"])
def test_secret_references_are_accepted_and_kept_as_given(ref: str) -> None:
    c = config(chat_model={"use": "llm", "config": {"api_key": ref, "deep": {"token": ref}}})
    assert c.chat_model is not None
    assert c.chat_model.config == {"api_key": ref, "deep": {"token": ref}}
    assert c.model_dump(mode="json")["chat_model"]["config"]["api_key"] == ref


@pytest.mark.parametrize(
    "value", ["prefix-${env:X}", "${env:X} ", "${vault:X}", "${env:}", "$ {env:X}", "{env:X}"]
)
def test_anything_but_a_whole_reference_is_plain_text(value: str) -> None:
    with pytest.raises(ValidationError):
        config(chat_model={"use": "llm", "config": {"api_key": value}})


def test_keys_that_only_contain_a_secret_word_are_not_secrets() -> None:
    c = config(
        chat_model={
            "use": "llm",
            "config": {
                "max_tokens": "512",
                "token_limit": "9",
                "api_key_header": "X-Key",
                "api_key": "",
            },
        }
    )
    assert c.chat_model is not None and c.chat_model.config["max_tokens"] == "512"


# --- resolve_secrets -------------------------------------------------------------------


def test_resolve_replaces_references_recursively(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RT_TEST_KEY", "from-env")
    secret = tmp_path / "secret.txt"
    secret.write_text("  from-file\n", encoding="utf-8")
    value = {
        "api_key": "${env:RT_TEST_KEY}",
        "nested": {"token": f"${{file:{secret}}}", "n": 3, "plain": "x"},
        "list": ["${env:RT_TEST_KEY}", 1, None],
    }
    assert resolve_secrets(value) == {
        "api_key": "from-env",
        "nested": {"token": "from-file", "n": 3, "plain": "x"},
        "list": ["from-env", 1, None],
    }
    # The input is left as it was (the record keeps the references).
    assert value["api_key"] == "${env:RT_TEST_KEY}"


def test_resolve_leaves_non_references_alone() -> None:
    assert resolve_secrets("hello ${env:X}") == "hello ${env:X}"
    assert resolve_secrets(4) == 4
    assert resolve_secrets(None) is None


def test_a_missing_variable_is_a_config_error_naming_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RT_TEST_MISSING", raising=False)
    with pytest.raises(ConfigError) as info:
        resolve_secrets({"a": {"api_key": "${env:RT_TEST_MISSING}"}})
    assert "${env:RT_TEST_MISSING}" in info.value.message
    assert "not set" in info.value.message


def test_a_missing_file_is_a_config_error_naming_the_reference(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        resolve_secrets([f"${{file:{path}}}"])
    assert f"${{file:{path}}}" in info.value.message


def test_an_error_never_shows_another_resolved_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RT_TEST_PRESENT", "top-secret-value")
    monkeypatch.delenv("RT_TEST_MISSING", raising=False)
    with pytest.raises(ConfigError) as info:
        resolve_secrets({"a": "${env:RT_TEST_PRESENT}", "b": "${env:RT_TEST_MISSING}"})
    assert "top-secret-value" not in str(info.value)
