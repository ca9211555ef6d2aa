"""The in-flight cap (ragtide.api.limits) as pure ASGI: refusals, exemptions, accounting."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from ragtide.api.limits import EXEMPT_PATHS, InFlightLimitMiddleware, overloaded_response
from ragtide.observability import HTTP_OVERLOADED


def test_the_overloaded_answer() -> None:
    response = overloaded_response("requests")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1" and "connection" not in response.headers
    assert orjson.loads(response.body) == {
        "error": {
            "code": "overloaded",
            "message": "this replica is serving too many requests; retry shortly",
        }
    }
    closing = overloaded_response("connections", close=True)
    assert closing.headers["connection"] == "close" and closing.headers["retry-after"] == "1"
    assert b"too many connections" in closing.body


class _Gated:
    """An app whose requests wait until released, counting the ones it served."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.served: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await self.release.wait()
        self.served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _call(app: Any, path: str, kind: str = "http") -> int:
    return (await _exchange(app, path, kind))[0]


async def _exchange(app: Any, path: str, kind: str = "http") -> tuple[int, bytes]:
    """The status and the body the app sent (0 and b"" if it sent nothing)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": kind, "path": path, "method": "GET", "headers": [], "query_string": b""}
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return (int(sent[0]["status"]) if sent else 0), body


@pytest.mark.anyio
async def test_requests_past_the_cap_are_refused_and_probes_never() -> None:
    inner = _Gated()
    app = InFlightLimitMiddleware(inner, max_in_flight=2)
    held = [asyncio.create_task(_call(app, "/slow")) for _ in range(2)]
    for _ in range(100):  # both are admitted within a few turns of the loop; never wait on
        if app.in_flight == 2:  # a count that cannot come (a cap that admits nothing)
            break
        await asyncio.sleep(0)
    assert app.in_flight == 2
    refusals = HTTP_OVERLOADED.labels("in_flight")._value.get()
    status, body = await _exchange(app, "/v1/namespaces")  # the third one
    assert status == 503
    assert orjson.loads(body) == orjson.loads(overloaded_response("requests").body)
    assert b"too many requests" in body
    assert HTTP_OVERLOADED.labels("in_flight")._value.get() == refusals + 1
    assert app.in_flight == 2
    for path in sorted(EXEMPT_PATHS):
        assert await _call(app, path) == 200  # probes and scrapes pass at the cap
    assert EXEMPT_PATHS == {"/healthz", "/ready", "/metrics"}
    assert await _call(app, "/other", kind="lifespan") == 200  # not HTTP: not counted
    inner.release.set()
    assert await asyncio.gather(*held) == [200, 200]
    assert app.in_flight == 0  # released when each response ended
    assert await _call(app, "/v1/namespaces") == 200


@pytest.mark.anyio
async def test_a_failing_request_is_released_too() -> None:
    async def boom(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("handler failed")

    app = InFlightLimitMiddleware(boom, max_in_flight=1)
    with pytest.raises(RuntimeError):
        await _call(app, "/x")
    assert app.in_flight == 0
