"""The search fast path answers exactly as the FastAPI route it stands in for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragtide.api import fastpath
from ragtide.api.app import create_app
from ragtide.api.fastpath import SearchFastPath, _first_route
from tests.api.conftest import (
    KUBE,
    auth_settings,
    bearer,
    make_settings,
    new_key,
    put_tenant,
    upload,
)

JSON = {"Content-Type": "application/json"}

# (path, body bytes, headers): the route's answers, good and bad
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("/v1/namespaces/default/search", b'{"query": "pod memory limit", "top_k": 2}', JSON),
    ("/v1/namespaces/default/search", b'{"query": "pod", "top_k": 1, "x": 1}', JSON),
    ("/v1/namespaces/default/search", b'{"query": "pod", "top_k": 100000}', JSON),
    ("/v1/namespaces/default/search", b'{"query": "", "top_k": 1}', JSON),
    ("/v1/namespaces/default/search", b'{"query": "pod", "top_k": "3"}', JSON),
    ("/v1/namespaces/default/search", b'{"top_k": 1}', JSON),
    ("/v1/namespaces/default/search", b'{"query": "pod"', JSON),
    ("/v1/namespaces/default/search", b"", JSON),
    ("/v1/namespaces/default/search", b"[]", JSON),
    ("/v1/namespaces/default/search", b'{"query": "pod"}', {"Content-Type": "text/plain"}),
    ("/v1/namespaces/default/search", b'{"query": "pod"}', {}),
    ("/v1/namespaces/default/search", b'{"query": "' + b"a" * 2_000_000 + b'"}', JSON),
    ("/v1/namespaces/missing/search", b'{"query": "pod"}', JSON),
    ("/v1/namespaces/-bad/search", b'{"query": "pod"}', JSON),
    ("/v1/namespaces/a%0A/search", b'{"query": "pod"}', JSON),
    ("/v1/namespaces/default/search/", b'{"query": "pod"}', JSON),
    ("/v1/namespaces/default/search", b'{"query": "pod"}', {**JSON, "X-Request-ID": "abc-1"}),
]

VOLATILE = {"date", "x-request-id"}


def _answers(client: TestClient) -> list[tuple[int, bytes, dict[str, str]]]:
    out = []
    for path, body, headers in CASES:
        r = client.post(path, content=body, headers=headers, follow_redirects=False)
        kept = {k: v for k, v in r.headers.items() if k not in VOLATILE}
        if "x-request-id" in {k.lower() for k in headers}:
            kept["x-request-id"] = r.headers["x-request-id"]
        out.append((r.status_code, r.content, kept))
    return out


@pytest.fixture
def served(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path), configure_logs=False)) as client:
        assert upload(client, "default", "kube.md", KUBE).status_code == 201
        yield client


def _route_label_count(client: TestClient, status: int) -> float:
    for line in client.get("/metrics").text.splitlines():
        if (
            line.startswith("ragtide_http_requests_total{")
            and 'route="/v1/namespaces/{namespace}/search"' in line
            and f'status="{status}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_fast_path_answers_as_the_route_does(
    served: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    served_fast: list[str] = []
    serve = SearchFastPath._serve

    async def spy(self: SearchFastPath, route: Any, namespace: str, *args: Any) -> None:
        served_fast.append(namespace)
        await serve(self, route, namespace, *args)

    monkeypatch.setattr(SearchFastPath, "_serve", spy)
    fast = _answers(served)
    assert "default" in served_fast and "missing" in served_fast
    assert "-bad" not in served_fast  # the route's own validation answers that

    async def through(self: SearchFastPath, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    monkeypatch.setattr(SearchFastPath, "__call__", through)
    assert _answers(served) == fast
    statuses = [status for status, _, _ in fast]
    assert statuses[0] == 200 and {413, 415, 422, 404} <= set(statuses)


def test_metrics_label_the_route_by_its_template(served: TestClient) -> None:
    before = _route_label_count(served, 200)
    r = served.post("/v1/namespaces/default/search", json={"query": "pod"})
    assert r.status_code == 200 and r.headers["x-request-id"]
    assert _route_label_count(served, 200) == before + 1


def test_the_fast_path_stands_aside_when_another_route_comes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(make_settings(tmp_path), configure_logs=False)

    @app.post("/v1/namespaces/{namespace}/{action}")
    async def shadow(namespace: str, action: str) -> dict[str, str]:
        return {"shadowed": action}

    app.router.routes.insert(0, app.router.routes.pop())
    assert getattr(_first_route(app.router.routes, fastpath._PROBE, "POST"), "path", "") != (
        fastpath.SEARCH_PATH
    )
    with TestClient(app) as client:
        r = client.post("/v1/namespaces/default/search", json={"query": "pod"})
    assert r.json() == {"shadowed": "search"}


def _with_credentials(root: Path) -> list[tuple[int, bytes, dict[str, str]]]:
    """Answers to searches by each kind of caller, authentication on."""
    settings = auth_settings(root)
    with TestClient(create_app(settings, configure_logs=False)) as client:
        put_tenant(client, "acme")
        _, writer = new_key(client, "acme", ["read", "write"])
        _, reader = new_key(client, "acme", ["read"])
        _, no_read = new_key(client, "acme", ["write"])
        _, elsewhere = new_key(client, "acme", ["read"], namespaces=["other"])
        r = client.post(
            "/v1/namespaces/docs/documents", files={"file": ("kube.md", KUBE)}, headers=writer
        )
        assert r.status_code == 201, r.text
        callers = [reader, no_read, elsewhere, {}, bearer("rk-" + "x" * 40)]
        out = []
        for caller in callers:
            for path in ("/v1/namespaces/docs/search", "/v1/namespaces/missing/search"):
                r = client.post(path, json={"query": "pod limits", "top_k": 2}, headers=caller)
                kept = {k: v for k, v in r.headers.items() if k not in VOLATILE}
                out.append((r.status_code, r.content, kept))
        return out


def test_credentials_are_checked_as_the_route_checks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _with_credentials(tmp_path / "fast")

    async def through(self: SearchFastPath, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    monkeypatch.setattr(SearchFastPath, "__call__", through)
    assert _with_credentials(tmp_path / "route") == fast
    assert {status for status, _, _ in fast} == {200, 401, 403, 404}


def test_routes_are_prepared_before_the_app_is_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FastAPI prepares a router's routes on its first request unless they were prepared
    # at start: count the preparations after start, through the first requests.
    import fastapi.routing

    prepared: list[str] = []
    original = fastapi.routing._EffectiveRouteContext.from_api_route

    def counting(*args: Any, **kwargs: Any) -> Any:
        prepared.append(str(kwargs.get("original_route", args[0] if args else "")))
        return original(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing._EffectiveRouteContext, "from_api_route", counting)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        at_start = len(prepared)
        assert at_start > 10  # every route of every router, before the first request
        upload(client, "default", "pods.md", KUBE)
        hits = client.post("/v1/namespaces/default/search", json={"query": "pod", "top_k": 1})
        assert hits.status_code == 200
        assert client.post("/v1/namespaces/default/chat", json={"message": "pods?"}).is_success
        assert client.get("/v1/namespaces").status_code == 200
        assert len(prepared) == at_start  # none prepared on demand
    assert fastpath.warm_routes([]) == 0
