"""The error tree (ragtide.errors): every class's place, stable code, message and fields.

Clients match on ``code`` and read ``message``; the edges read ``retry_after`` and
``limit``. Each is pinned here class by class, as the module docstring draws them.
"""

from __future__ import annotations

import pytest

from ragtide import errors as e

TREE: list[tuple[type[e.RagtideError], type[Exception], str]] = [
    (e.RagtideError, Exception, "internal"),
    (e.ConfigError, e.RagtideError, "config_error"),
    (e.PluginNotFound, e.ConfigError, "plugin_not_found"),
    (e.PluginError, e.ConfigError, "plugin_error"),
    (e.PluginFailed, e.ConfigError, "plugin_failed"),
    (e.InvalidRequest, e.RagtideError, "invalid_request"),
    (e.InvalidNamespace, e.InvalidRequest, "invalid_namespace"),
    (e.InvalidCallbackURL, e.InvalidRequest, "invalid_callback_url"),
    (e.Unauthenticated, e.RagtideError, "unauthenticated"),
    (e.NotFound, e.RagtideError, "not_found"),
    (e.TenantNotFound, e.NotFound, "tenant_not_found"),
    (e.KeyNotFound, e.NotFound, "key_not_found"),
    (e.NamespaceNotFound, e.NotFound, "namespace_not_found"),
    (e.DocumentNotFound, e.NotFound, "document_not_found"),
    (e.SessionNotFound, e.NotFound, "session_not_found"),
    (e.TaskNotFound, e.NotFound, "task_not_found"),
    (e.PermissionDenied, e.RagtideError, "permission_denied"),
    (e.Forbidden, e.PermissionDenied, "forbidden"),
    (e.PayloadTooLarge, e.RagtideError, "payload_too_large"),
    (e.DocumentTooLarge, e.PayloadTooLarge, "document_too_large"),
    (e.UnsupportedMediaType, e.RagtideError, "unsupported_media_type"),
    (e.DocumentRejected, e.RagtideError, "document_rejected"),
    (e.EmptyDocument, e.DocumentRejected, "empty_document"),
    (e.DocumentTooComplex, e.DocumentRejected, "document_too_complex"),
    (e.CorruptDocument, e.DocumentRejected, "corrupt_document"),
    (e.IdempotencyKeyReused, e.RagtideError, "idempotency_key_reused"),
    (e.RateLimited, e.RagtideError, "rate_limited"),
    (e.QuotaExceeded, e.RateLimited, "quota_exceeded"),
    (e.UpstreamError, e.RagtideError, "upstream_error"),
    (e.UpstreamTimeout, e.UpstreamError, "upstream_timeout"),
    (e.TasksDisabled, e.RagtideError, "tasks_disabled"),
    (e.BackendUnavailable, e.RagtideError, "backend_unavailable"),
]


@pytest.mark.parametrize(("cls", "parent", "code"), TREE, ids=[c.__name__ for c, _, _ in TREE])
def test_each_class_has_its_parent_and_code(
    cls: type[e.RagtideError], parent: type[Exception], code: str
) -> None:
    assert cls.__bases__ == (parent,)
    assert cls.code == code


def test_the_tree_lists_every_exported_class() -> None:
    assert sorted(c.__name__ for c, _, _ in TREE) == sorted(e.__all__)


def test_a_plain_error_keeps_its_message() -> None:
    err = e.UpstreamTimeout("the model did not answer in 30 s")
    assert err.message == "the model did not answer in 30 s"
    assert str(err) == err.message
    assert err.args == (err.message,)


def test_plugin_not_found_names_kind_name_and_choices() -> None:
    err = e.PluginNotFound("retriever", "qdrant", ["hybrid", "memory"])
    assert err.message == "no retriever plugin named 'qdrant' (available: hybrid, memory)"
    assert str(err) == err.message
    assert (err.kind, err.name, err.available) == ("retriever", "qdrant", ["hybrid", "memory"])
    none = e.PluginNotFound("embedder", "x", [])
    assert none.message == "no embedder plugin named 'x' (available: none installed)"


def test_not_found_messages_name_what_is_missing() -> None:
    tenant = e.TenantNotFound("acme")
    assert (tenant.message, tenant.tenant) == ("tenant 'acme' does not exist", "acme")
    assert str(tenant) == tenant.message
    assert e.KeyNotFound("acme", "k1").message == "key 'k1' not found in tenant 'acme'"
    assert str(e.KeyNotFound("acme", "k1")) == "key 'k1' not found in tenant 'acme'"


@pytest.mark.parametrize("namespace", ["acme/kb", "kb", "a/b/kb"])
def test_namespaced_messages_show_the_tenants_own_name(namespace: str) -> None:
    ns = e.NamespaceNotFound(namespace)
    assert (ns.message, ns.namespace) == ("namespace 'kb' does not exist", "kb")
    assert str(ns) == ns.message
    assert e.DocumentNotFound(namespace, "d1").message == (
        "document 'd1' not found in namespace 'kb'"
    )
    assert e.SessionNotFound(namespace, "s1").message == (
        "session 's1' not found in namespace 'kb'"
    )
    assert e.TaskNotFound(namespace, "t1").message == "task 't1' not found in namespace 'kb'"
    for err in (
        e.DocumentNotFound(namespace, "d1"),
        e.SessionNotFound(namespace, "s1"),
        e.TaskNotFound(namespace, "t1"),
    ):
        assert str(err) == err.message


@pytest.mark.parametrize("cls", [e.DocumentTooLarge, e.DocumentTooComplex])
def test_ingest_limits_name_their_setting(cls: type[e.DocumentTooLarge]) -> None:
    err = cls("too many lines", "max_lines")
    assert (err.message, str(err), err.limit) == ("too many lines", "too many lines", "max_lines")
    assert cls("too big").limit == ""


def test_retry_after_defaults_and_values() -> None:
    limited = e.RateLimited("slow down")
    assert (limited.message, str(limited), limited.retry_after) == ("slow down", "slow down", 1.0)
    assert e.RateLimited("slow down", retry_after=2.5).retry_after == 2.5
    quota = e.QuotaExceeded("used up", retry_after=3600)
    assert (quota.message, quota.retry_after) == ("used up", 3600)
    assert e.QuotaExceeded("used up").retry_after == 1.0
    down = e.BackendUnavailable("redis is down")
    assert (down.message, str(down), down.retry_after) == ("redis is down", "redis is down", 5.0)
    assert e.BackendUnavailable("redis is down", retry_after=0.2).retry_after == 0.2
