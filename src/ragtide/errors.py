"""The one exception tree of Ragtide.

The core raises these; only the edges (``ragtide.api.errors``, the CLI) translate
them into HTTP statuses or exit codes. Every class has a stable ``code`` that
clients can match on::

    RagtideError                     internal
    ├── ConfigError                  config_error        invalid settings or component config
    │   ├── PluginNotFound           plugin_not_found    names the kind, the name and the choices
    │   ├── PluginError              plugin_error        a plugin failed validation
    │   └── PluginFailed             plugin_failed       a tenant's plugin failed at run time
    ├── InvalidRequest               invalid_request     malformed input (422)
    │   ├── InvalidNamespace         invalid_namespace
    │   └── InvalidCallbackURL       invalid_callback_url  a webhook target that is refused
    ├── Unauthenticated              unauthenticated     no valid credential (401)
    ├── NotFound                     not_found           (404)
    │   ├── TenantNotFound           tenant_not_found
    │   ├── KeyNotFound              key_not_found
    │   ├── NamespaceNotFound        namespace_not_found
    │   ├── DocumentNotFound         document_not_found
    │   ├── SessionNotFound          session_not_found
    │   └── TaskNotFound             task_not_found
    ├── PermissionDenied             permission_denied   a policy denied the action (403)
    │   └── Forbidden                forbidden           the credential lacks the scope (403)
    ├── PayloadTooLarge              payload_too_large   (413)
    │   └── DocumentTooLarge         document_too_large  over an ingest size limit (names it)
    ├── UnsupportedMediaType         unsupported_media_type (415)
    ├── DocumentRejected             document_rejected   a file that cannot be ingested (422)
    │   ├── EmptyDocument            empty_document
    │   ├── DocumentTooComplex       document_too_complex  over an ingest structure or time limit
    │   └── CorruptDocument          corrupt_document
    ├── IdempotencyKeyReused         idempotency_key_reused  same key, another request (409)
    ├── RateLimited                  rate_limited        (429)
    │   └── QuotaExceeded            quota_exceeded      a tenant's quota is used up (429)
    ├── UpstreamError                upstream_error      an LLM or remote component failed (502)
    │   └── UpstreamTimeout          upstream_timeout    (504)
    ├── TasksDisabled                tasks_disabled      no RabbitMQ configured (501)
    └── BackendUnavailable           backend_unavailable a store or cache is down (503)
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "CorruptDocument",
    "DocumentNotFound",
    "DocumentRejected",
    "DocumentTooComplex",
    "DocumentTooLarge",
    "EmptyDocument",
    "Forbidden",
    "IdempotencyKeyReused",
    "InvalidCallbackURL",
    "InvalidNamespace",
    "InvalidRequest",
    "KeyNotFound",
    "NamespaceNotFound",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PluginError",
    "PluginFailed",
    "PluginNotFound",
    "QuotaExceeded",
    "RagtideError",
    "RateLimited",
    "SessionNotFound",
    "TaskNotFound",
    "TasksDisabled",
    "TenantNotFound",
    "Unauthenticated",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamTimeout",
]


class RagtideError(Exception):
    """Base of every error Ragtide raises on purpose."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(RagtideError):
    code = "config_error"


class PluginNotFound(ConfigError):
    code = "plugin_not_found"

    def __init__(self, kind: str, name: str, available: list[str]) -> None:
        choices = ", ".join(available) or "none installed"
        super().__init__(f"no {kind} plugin named {name!r} (available: {choices})")
        self.kind, self.name, self.available = kind, name, available


class PluginError(ConfigError):
    code = "plugin_error"


class PluginFailed(ConfigError):
    """A plugin a tenant chose failed (import, protocol, config or an exception at run
    time): that tenant's requests fail with this, nobody else's."""

    code = "plugin_failed"


class InvalidRequest(RagtideError):
    code = "invalid_request"


class InvalidNamespace(InvalidRequest):
    code = "invalid_namespace"


class InvalidCallbackURL(InvalidRequest):
    code = "invalid_callback_url"


class Unauthenticated(RagtideError):
    """No credential, or one that is unknown, malformed, expired or revoked.

    The message never says which of those it was for an API key (no oracle for key
    guessing); it does for a JWT, whose claims the caller can read anyway.
    """

    code = "unauthenticated"


class NotFound(RagtideError):
    code = "not_found"


class TenantNotFound(NotFound):
    code = "tenant_not_found"

    def __init__(self, tenant: str) -> None:
        super().__init__(f"tenant {tenant!r} does not exist")
        self.tenant = tenant


class KeyNotFound(NotFound):
    code = "key_not_found"

    def __init__(self, tenant: str, key_id: str) -> None:
        super().__init__(f"key {key_id!r} not found in tenant {tenant!r}")


def _shown(namespace: str) -> str:
    """A namespace as its tenant names it: the core's keys are ``tenant/name``."""
    return namespace.rpartition("/")[2]


class NamespaceNotFound(NotFound):
    code = "namespace_not_found"

    def __init__(self, namespace: str) -> None:
        super().__init__(f"namespace {_shown(namespace)!r} does not exist")
        self.namespace = _shown(namespace)


class DocumentNotFound(NotFound):
    code = "document_not_found"

    def __init__(self, namespace: str, document_id: str) -> None:
        super().__init__(
            f"document {document_id!r} not found in namespace {_shown(namespace)!r}"
        )


class SessionNotFound(NotFound):
    code = "session_not_found"

    def __init__(self, namespace: str, session_id: str) -> None:
        super().__init__(f"session {session_id!r} not found in namespace {_shown(namespace)!r}")


class TaskNotFound(NotFound):
    code = "task_not_found"

    def __init__(self, namespace: str, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found in namespace {_shown(namespace)!r}")


class IdempotencyKeyReused(RagtideError):
    code = "idempotency_key_reused"


class TasksDisabled(RagtideError):
    code = "tasks_disabled"


class PermissionDenied(RagtideError):
    code = "permission_denied"


class Forbidden(PermissionDenied):
    code = "forbidden"


class PayloadTooLarge(RagtideError):
    code = "payload_too_large"


class DocumentTooLarge(PayloadTooLarge):
    """An upload over one of the ingest limits on size: inflated bytes, characters, lines,
    pages, or the memory of the worker that parsed it. ``limit`` names the setting."""

    code = "document_too_large"

    def __init__(self, message: str, limit: str = "") -> None:
        super().__init__(message)
        self.limit = limit


class UnsupportedMediaType(RagtideError):
    code = "unsupported_media_type"


class DocumentRejected(RagtideError):
    code = "document_rejected"


class EmptyDocument(DocumentRejected):
    code = "empty_document"


class DocumentTooComplex(DocumentRejected):
    """An upload over one of the ingest limits on structure or effort: archive entries,
    compression ratio, XML or HTML nesting, parse time. ``limit`` names the setting."""

    code = "document_too_complex"

    def __init__(self, message: str, limit: str = "") -> None:
        super().__init__(message)
        self.limit = limit


class CorruptDocument(DocumentRejected):
    code = "corrupt_document"


class RateLimited(RagtideError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    code = "quota_exceeded"


class UpstreamError(RagtideError):
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"


class BackendUnavailable(RagtideError):
    code = "backend_unavailable"

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
