"""The in-flight cap's refusal (``ragtide.api.limits``): the answer a request past the cap
gets, body and headers, not only its status."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ragtide.api.limits import InFlightLimitMiddleware


@pytest.mark.anyio
async def test_a_request_past_the_cap_is_told_why_and_when_to_retry() -> None:
    async def never(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a refused request must not reach the app")

    app = InFlightLimitMiddleware(never, max_in_flight=0)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/v1/x", "method": "GET", "headers": [], "query_string": b""}
    await app(scope, receive, send)
    start, body = sent
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"1" and b"connection" not in headers
    assert headers[b"content-type"] == b"application/json"
    assert orjson.loads(body["body"]) == {
        "error": {
            "code": "overloaded",
            "message": "this replica is serving too many requests; retry shortly",
        }
    }
    assert app.in_flight == 0
