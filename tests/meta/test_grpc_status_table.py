"""Every RagtideError has a gRPC status, in step with its HTTP status."""

from __future__ import annotations

import inspect

import pytest

from ragtide import errors

grpc = pytest.importorskip("grpc")

from ragtide.api.errors import STATUS as HTTP_STATUS  # noqa: E402
from ragtide.api.errors import status_for  # noqa: E402
from ragtide.grpc.status import STATUS, code_for, trailers_for  # noqa: E402

Code = grpc.StatusCode

# The gRPC codes an HTTP status may become (the usual correspondence, google.rpc.Code).
COMPATIBLE: dict[int, set[grpc.StatusCode]] = {
    401: {Code.UNAUTHENTICATED},
    403: {Code.PERMISSION_DENIED},
    404: {Code.NOT_FOUND},
    409: {Code.ALREADY_EXISTS, Code.ABORTED, Code.FAILED_PRECONDITION},
    413: {Code.RESOURCE_EXHAUSTED, Code.INVALID_ARGUMENT},
    415: {Code.INVALID_ARGUMENT},
    422: {Code.INVALID_ARGUMENT},
    429: {Code.RESOURCE_EXHAUSTED},
    500: {Code.INTERNAL},
    501: {Code.UNIMPLEMENTED},
    502: {Code.UNAVAILABLE},
    503: {Code.UNAVAILABLE},
    504: {Code.DEADLINE_EXCEEDED},
}


def _error_classes() -> list[type[errors.RagtideError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.RagtideError)
    ]


def _instance(cls: type[errors.RagtideError]) -> errors.RagtideError:
    instance = cls.__new__(cls)
    instance.message = "m"
    return instance


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_has_a_grpc_status_that_agrees_with_http(
    cls: type[errors.RagtideError],
) -> None:
    instance = _instance(cls)
    code = code_for(instance)
    http = status_for(instance)
    assert code in COMPATIBLE[http], (cls.__name__, http, code)
    if http < 500 or cls in (errors.TasksDisabled,):
        assert code is not Code.INTERNAL, cls


def test_the_two_tables_name_the_same_classes() -> None:
    assert set(STATUS) == set(HTTP_STATUS)


def test_every_refusal_carries_its_code_and_retry_after_when_it_has_one() -> None:
    for cls in _error_classes():
        instance = _instance(cls)
        if isinstance(instance, errors.RateLimited | errors.BackendUnavailable):
            instance.retry_after = 2.5  # type: ignore[attr-defined]
        trailers = dict(trailers_for(instance))
        assert trailers["ragtide-error-code"] == cls.code
        assert isinstance(trailers["grpc-status-details-bin"], bytes)
        retry = "retry-after" in trailers
        assert retry == isinstance(instance, errors.RateLimited | errors.BackendUnavailable)
        if retry:
            assert trailers["retry-after"] == "3"
