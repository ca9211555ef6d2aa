"""The MCP endpoint, driven by the official SDK's own client against a real uvicorn server.

The app is ``create_app`` with authentication on plus ``mount_mcp``; tenants ``a`` and
``b`` both have a namespace ``docs`` (pods and bread), and ``b`` also has ``b-only``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from ragtide.api.app import create_app
from ragtide.bench.server import free_port
from tests.api.conftest import ADMIN, COOKING, KUBE, auth_settings

pytestmark = pytest.mark.anyio


@dataclass
class Served:
    base: str
    a: dict[str, str]  # read + write key of tenant a
    b: dict[str, str]  # read + write key of tenant b
    a_writer: dict[str, str]  # write-only key of tenant a
    c: dict[str, str]  # read key of tenant c (one chat turn a day)
    first_status: int = 0  # of the first POST /mcp once the app served

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"


def _key(base: str, tenant: str, scopes: list[str]) -> dict[str, str]:
    r = httpx.post(f"{base}/v1/tenants/{tenant}/keys", json={"scopes": scopes}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


def _upload(base: str, headers: dict[str, str], ns: str, name: str, data: bytes) -> None:
    r = httpx.post(
        f"{base}/v1/namespaces/{ns}/documents", files={"file": (name, data)}, headers=headers
    )
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = auth_settings(tmp_path_factory.mktemp("mcp"))
    app = create_app(settings, configure_logs=False)  # with /mcp (``mount_mcp``)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    first_status = httpx.post(f"{base}/mcp", json={}).status_code
    try:
        for tenant, config in (("a", {}), ("b", {}), ("c", {"quotas": {"chat_turns_per_day": 1}})):
            r = httpx.put(f"{base}/v1/tenants/{tenant}", json=config, headers=ADMIN)
            assert r.status_code == 201, r.text
        world = Served(
            base,
            a=_key(base, "a", ["read", "write"]),
            b=_key(base, "b", ["read", "write"]),
            a_writer=_key(base, "a", ["write"]),
            c=_key(base, "c", ["read"]),
            first_status=first_status,
        )
        _upload(base, world.a, "docs", "pods.md", KUBE)
        _upload(base, world.b, "docs", "bread.md", COOKING)
        _upload(base, world.b, "b-only", "bread.md", COOKING)
        c_writer = _key(base, "c", ["write"])
        _upload(base, c_writer, "docs", "pods.md", KUBE)
        yield world
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@asynccontextmanager
async def session(url: str, headers: dict[str, str] | None) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers=headers or {}) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as s,
    ):
        await s.initialize()
        yield s


def _error(result: Any) -> dict[str, Any]:
    assert result.is_error, result
    error: dict[str, Any] = result.structured_content["error"]
    assert result.content[0].text.startswith(f"{error['code']}: ")
    return error


async def test_the_mcp_server_runs_as_soon_as_the_app_serves(served: Served) -> None:
    assert served.first_status != 503


async def test_the_mcp_sdk_is_imported_before_the_app_serves(tmp_path: Path) -> None:
    # Imported after the app's start-up, the SDK held the GIL for over a second while
    # the first searches after ready waited: the endpoint runs once start-up is over.
    app = create_app(auth_settings(tmp_path), configure_logs=False)  # mounts MCP itself
    (route,) = [r for r in app.router.routes if getattr(r, "path", None) == "/mcp"]
    async with app.router.lifespan_context(app):
        assert route.app.endpoint is not None  # type: ignore[attr-defined]
    assert route.app.endpoint is None  # type: ignore[attr-defined]


async def test_tools_are_listed_with_their_arguments(served: Served) -> None:
    async with session(served.url, served.a) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
    assert set(tools) == {"search", "chat", "get_document", "list_namespaces"}
    search = tools["search"].input_schema
    assert set(search["properties"]) == {"query", "namespace", "top_k"}
    assert search["required"] == ["query"]
    assert search["properties"]["namespace"]["default"] == "default"
    assert search["properties"]["top_k"]["default"] == 5
    assert set(tools["chat"].input_schema["properties"]) == {"message", "namespace", "session_id"}
    assert tools["get_document"].input_schema["required"] == ["namespace", "document_id"]
    assert tools["search"].output_schema is not None


async def test_search_finds_the_callers_documents(served: Served) -> None:
    async with session(served.url, served.a) as s:
        result = await s.call_tool(
            "search", {"query": "memory limit of a pod", "namespace": "docs", "top_k": 3}
        )
    assert not result.is_error
    data = result.structured_content
    assert data is not None and data["namespace"] == "docs"
    assert [h["document_id"] for h in data["results"]] == ["pods.md"]
    assert "kubelet" in data["results"][0]["text"]
    assert json.loads(result.content[0].text) == data  # the same as text for older clients


async def test_chat_answers_with_citations_and_keeps_the_session(served: Served) -> None:
    async with session(served.url, served.a) as s:
        first = await s.call_tool("chat", {"message": "What is a Pod?", "namespace": "docs"})
        assert not first.is_error, first
        data = first.structured_content
        assert data is not None
        assert "Pod" in data["answer"] and data["citations"]
        assert data["citations"][0]["document_id"] == "pods.md"
        session_id = data["session_id"]
        again = await s.call_tool(
            "chat",
            {"message": "And its limits?", "namespace": "docs", "session_id": session_id},
        )
    assert not again.is_error and again.structured_content is not None
    assert again.structured_content["session_id"] == session_id
    # The turns are the tenant's, visible over HTTP in the same session.
    r = httpx.get(f"{served.base}/v1/namespaces/docs/sessions/{session_id}", headers=served.a)
    assert r.status_code == 200 and len(r.json()["turns"]) == 4


async def test_get_document_and_its_errors(served: Served) -> None:
    async with session(served.url, served.a) as s:
        doc = await s.call_tool("get_document", {"namespace": "docs", "document_id": "pods.md"})
        missing = await s.call_tool("get_document", {"namespace": "docs", "document_id": "nope"})
    assert not doc.is_error and doc.structured_content is not None
    assert doc.structured_content["id"] == "pods.md"
    assert doc.structured_content["title"] == "Pods"
    assert doc.structured_content["chunks"] >= 1
    error = _error(missing)
    assert (error["code"], error["status"]) == ("document_not_found", 404)


async def test_namespaces_as_tool_and_resources(served: Served) -> None:
    async with session(served.url, served.b) as s:
        listed = await s.call_tool("list_namespaces", {})
        resources = (await s.list_resources()).resources
        templates = (await s.list_resource_templates()).resource_templates
        index = await s.read_resource("ragtide://namespaces")
        one = await s.read_resource("ragtide://namespaces/b-only")
    assert listed.structured_content is not None
    names = {n["namespace"]: n for n in listed.structured_content["namespaces"]}
    assert set(names) == {"docs", "b-only"}
    assert names["docs"]["documents"] == 1 and names["docs"]["chunks"] >= 1
    assert [str(r.uri) for r in resources] == ["ragtide://namespaces"]
    assert [t.uri_template for t in templates] == ["ragtide://namespaces/{namespace}"]
    text = index.contents[0].text  # type: ignore[union-attr]
    assert {n["namespace"] for n in json.loads(text)["namespaces"]} == {"docs", "b-only"}
    body = json.loads(one.contents[0].text)  # type: ignore[union-attr]
    assert body["namespace"] == "b-only" and body["documents"] == 1
    assert body["first_documents"] == [{"id": "bread.md", "title": "Bread"}]


async def test_no_credential_is_refused(served: Served) -> None:
    # The SDK's client cannot even initialize.
    with pytest.raises(Exception) as caught:  # an ExceptionGroup from the SDK's task group
        async with session(served.url, None):
            pass
    assert "MCPError" in repr(caught.value)
    # On the wire: a plain 401 with the API's error body, for no key and for a bad one.
    headers = {"accept": "application/json, text/event-stream"}
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for auth in ({}, {"Authorization": "Bearer rt_not-a-real-key"}):
        r = httpx.post(served.url, json=ping, headers={**headers, **auth})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthenticated"
        assert r.headers["www-authenticate"].startswith("Bearer")


async def test_another_tenants_namespace_is_not_found(served: Served) -> None:
    async with session(served.url, served.a) as s:
        other = await s.call_tool("search", {"query": "bread", "namespace": "b-only"})
        same_name = await s.call_tool("search", {"query": "bread flour yeast", "namespace": "docs"})
        doc = await s.call_tool("get_document", {"namespace": "docs", "document_id": "bread.md"})
        chat = await s.call_tool("chat", {"message": "How is bread baked?", "namespace": "b-only"})
        with pytest.raises(MCPError) as resource:
            await s.read_resource("ragtide://namespaces/b-only")
    assert _error(other)["code"] == "namespace_not_found"
    assert _error(chat)["code"] == "namespace_not_found"
    assert _error(doc)["code"] == "document_not_found"
    # "docs" of tenant a is a's own: b's bread is not in it.
    assert same_name.structured_content is not None
    assert all(h["document_id"] != "bread.md" for h in same_name.structured_content["results"])
    assert resource.value.data == {"code": "namespace_not_found", "status": 404}


async def test_scope_and_quota_checks_are_the_http_ones(served: Served) -> None:
    async with session(served.url, served.a_writer) as s:
        refused = await s.call_tool("search", {"query": "pods", "namespace": "docs"})
    assert (_error(refused)["code"], _error(refused)["status"]) == ("forbidden", 403)
    async with session(served.url, served.c) as s:
        first = await s.call_tool("chat", {"message": "What is a Pod?", "namespace": "docs"})
        second = await s.call_tool("chat", {"message": "What is a Pod?", "namespace": "docs"})
        big = await s.call_tool("search", {"query": "pods", "namespace": "docs", "top_k": 10**6})
    assert not first.is_error, first
    error = _error(second)
    assert (error["code"], error["status"]) == ("quota_exceeded", 429)
    assert error["retry_after"] > 0
    assert _error(big)["code"] == "invalid_request"


async def test_stateless_any_request_stands_alone(served: Served) -> None:
    """No MCP session is kept: a bare tools/call without initialize is answered."""
    headers = {
        **served.a,
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-11-25",
    }
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
    r = httpx.post(served.url, json=init, headers=headers)
    assert r.status_code == 200, r.text
    assert "mcp-session-id" not in r.headers
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "search", "arguments": {"query": "pods", "namespace": "docs"}},
    }
    r = httpx.post(served.url, json=call, headers=headers)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["structuredContent"]["results"][0]["document_id"] == "pods.md"
