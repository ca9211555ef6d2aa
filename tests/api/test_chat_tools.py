"""A tenant's grounding policy and tools through the HTTP API; what the search tool may
reach is what the caller's credential may read."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from ragtide.types import Prompt, Reply
from tests.api.conftest import KUBE, auth_settings, new_key, put_tenant, upload_as


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(auth_settings(tmp_path), configure_logs=False)) as c:
        yield c


class Searching:
    """A tool-calling model that searches the namespaces it is told to, then answers."""

    model_id = "searching"

    def __init__(self, *namespaces: str) -> None:
        self.namespaces = list(namespaces)

    async def generate(self, prompt: Prompt) -> Reply:
        return Reply("A Pod is the smallest deployable unit of computing [1].")

    async def stream(self, prompt: Prompt) -> Any:
        yield (await self.generate(prompt)).text

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        tool_choice: str | Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any]:
        if self.namespaces and tool_choice != "none":
            args = json.dumps({"query": "Pod", "namespace": self.namespaces.pop(0)})
            call = {"id": "c", "type": "function",
                    "function": {"name": "search", "arguments": args}}  # fmt: skip
            return {"message": {"role": "assistant", "content": "", "tool_calls": [call]}}
        return {"message": {"role": "assistant", "content": (await self.generate(None)).text}}  # type: ignore[arg-type]


def test_a_tenants_policy_and_tools_reach_its_turns(client: TestClient) -> None:
    put_tenant(client, "a", grounding="decline", tools=["search"])
    _, rw = new_key(client, "a", ["read", "write"])
    for ns in ("docs", "mine", "secret"):
        assert upload_as(client, rw, ns, "pods.md", KUBE).status_code == 201
    _, reader = new_key(client, "a", ["read"], namespaces=["docs", "mine"])
    tenants = client.app.state.tenants  # type: ignore[attr-defined]
    rt = client.portal.call(tenants.runtime, "a")  # type: ignore[union-attr]
    assert [tool.name for tool in rt.tools] == ["search"]
    rt.chat_model = Searching("secret", "mine", "nowhere")
    r = client.post("/v1/namespaces/docs/chat", json={"message": "What is a Pod?"}, headers=reader)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["grounding"]["policy"] == "decline"
    secret, mine, nowhere = (json.loads(call["result"]) for call in body["tool_calls"])
    assert "error" in secret and "secret" in secret["error"]  # the key may not read it
    assert mine["namespace"] == "mine" and mine["results"][0]["document_id"] == "pods.md"
    assert "error" in nowhere
    history = client.get(f"/v1/namespaces/docs/sessions/{body['session_id']}", headers=reader)
    roles = [turn["role"] for turn in history.json()["turns"]]
    assert roles == ["user", "tool", "tool", "tool", "assistant"]


def test_unknown_tools_and_policies_are_refused(client: TestClient) -> None:
    r = client.put("/v1/tenants/a", json={"grounding": "maybe"}, headers={"Authorization": ""})
    assert r.status_code in (401, 422)
    from tests.api.conftest import ADMIN

    r = client.put("/v1/tenants/a", json={"grounding": "maybe"}, headers=ADMIN)
    assert r.status_code == 422 and "grounding" in r.json()["error"]["message"]
    r = client.put("/v1/tenants/a", json={"tools": ["search", "search"]}, headers=ADMIN)
    assert r.status_code == 422 and "once" in r.json()["error"]["message"]
    r = client.put("/v1/tenants/a", json={"tools": ["search", "nope"]}, headers=ADMIN)
    assert r.status_code == 422
    assert "no tool named 'nope'" in r.json()["error"]["message"]
    assert "calculator" in r.json()["error"]["message"]  # the installed ones are named


def test_tools_with_a_model_that_cannot_call_them_are_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    put_tenant(client, "b", tools=["today"])
    _, rw = new_key(client, "b", ["read", "write"])
    assert upload_as(client, rw, "docs", "pods.md", KUBE).status_code == 201
    with caplog.at_level("WARNING", logger="ragtide.tenants"):
        r = client.post("/v1/namespaces/docs/chat", json={"message": "What is a Pod?"}, headers=rw)
    assert r.status_code == 200 and r.json()["tool_calls"] == []  # extractive: no tools
    assert any("tenant tools unused" in rec.getMessage() for rec in caplog.records)
