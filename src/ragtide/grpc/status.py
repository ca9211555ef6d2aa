"""The one table from core errors to gRPC status codes, and how a refusal is sent.

It mirrors ``ragtide.api.errors.STATUS`` (HTTP) class for class; a meta-test keeps the
two in step. Every refusal carries the stable Ragtide error code twice: in the trailing
metadata ``ragtide-error-code`` (easy to read from any client) and in the standard rich
status (``grpc-status-details-bin``: a ``google.rpc.Status`` with a
``google.rpc.ErrorInfo`` of domain ``ragtide``, readable with ``grpc_status.rpc_status``).
A refusal that may be retried later (rate limits, quotas, a backend that is down) also
carries ``retry-after`` (whole seconds, as HTTP's header) and a ``google.rpc.RetryInfo``.
"""

from __future__ import annotations

import logging
import math

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from ragtide import errors

__all__ = [
    "DETAILS_KEY",
    "DOMAIN",
    "ERROR_CODE_KEY",
    "RETRY_AFTER_KEY",
    "STATUS",
    "code_for",
    "trailers_for",
]

logger = logging.getLogger(__name__)

DOMAIN = "ragtide"
ERROR_CODE_KEY = "ragtide-error-code"
RETRY_AFTER_KEY = "retry-after"
DETAILS_KEY = "grpc-status-details-bin"

Code = grpc.StatusCode

STATUS: dict[type[errors.RagtideError], grpc.StatusCode] = {
    errors.RagtideError: Code.INTERNAL,
    errors.ConfigError: Code.INTERNAL,  # and PluginNotFound, PluginError, PluginFailed
    errors.InvalidRequest: Code.INVALID_ARGUMENT,
    errors.Unauthenticated: Code.UNAUTHENTICATED,
    errors.NotFound: Code.NOT_FOUND,
    errors.PermissionDenied: Code.PERMISSION_DENIED,  # and Forbidden (the scope)
    # gRPC answers a message over its size limit with RESOURCE_EXHAUSTED; an upload over
    # ours is the same kind of refusal (without RetryInfo: retrying will not help).
    errors.PayloadTooLarge: Code.RESOURCE_EXHAUSTED,
    errors.DocumentTooLarge: Code.RESOURCE_EXHAUSTED,
    errors.UnsupportedMediaType: Code.INVALID_ARGUMENT,
    errors.DocumentRejected: Code.INVALID_ARGUMENT,
    errors.DocumentTooComplex: Code.INVALID_ARGUMENT,
    errors.IdempotencyKeyReused: Code.FAILED_PRECONDITION,
    errors.TasksDisabled: Code.UNIMPLEMENTED,
    errors.RateLimited: Code.RESOURCE_EXHAUSTED,  # and QuotaExceeded, with retry-after
    errors.UpstreamError: Code.UNAVAILABLE,
    errors.UpstreamTimeout: Code.DEADLINE_EXCEEDED,
    errors.BackendUnavailable: Code.UNAVAILABLE,  # with retry-after
}


def code_for(exc: errors.RagtideError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return Code.INTERNAL


def _retry_after(exc: errors.RagtideError) -> int | None:
    value = getattr(exc, "retry_after", None)
    if not isinstance(value, int | float):
        return None
    return max(1, math.ceil(value))


def trailers_for(exc: errors.RagtideError) -> tuple[tuple[str, str | bytes], ...]:
    """The trailing metadata of a refusal: the error code, retry-after, the rich status."""
    code = code_for(exc)
    info = error_details_pb2.ErrorInfo(reason=exc.code, domain=DOMAIN)
    limit = getattr(exc, "limit", "")
    if isinstance(limit, str) and limit:
        info.metadata["limit"] = limit
    status = status_pb2.Status(code=code.value[0], message=exc.message)
    status.details.add().Pack(info)
    trailers: list[tuple[str, str | bytes]] = [(ERROR_CODE_KEY, exc.code)]
    seconds = _retry_after(exc)
    if seconds is not None:
        trailers.append((RETRY_AFTER_KEY, str(seconds)))
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
        status.details.add().Pack(retry)
    trailers.append((DETAILS_KEY, status.SerializeToString()))
    return tuple(trailers)
