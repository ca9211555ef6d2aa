from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ragtide.types import Prompt, Reply
from tests.api.conftest import COOKING, KUBE, metric_value, upload


def _seed(client: TestClient) -> None:
    assert upload(client, "kb", "pods.md", KUBE).status_code == 201
    assert upload(client, "kb", "bread.md", COOKING).status_code == 201


def test_chat_answers_with_citations(client: TestClient) -> None:
    _seed(client)
    r = client.post("/v1/namespaces/kb/chat", json={"message": "What is a Pod in Kubernetes?"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"session_id", "answer", "citations"}
    assert "smallest deployable unit" in body["answer"]
    first = body["citations"][0]
    assert set(first) == {"index", "document_id", "chunk_id", "title", "text", "score"}
    assert first["document_id"] == "pods.md"
    assert f"[{first['index']}]" in body["answer"]


def test_session_history_and_follow_up(client: TestClient) -> None:
    _seed(client)
    first = client.post("/v1/namespaces/kb/chat", json={"message": "What is a Pod?"}).json()
    sid = first["session_id"]
    follow = client.post(
        "/v1/namespaces/kb/chat",
        json={"message": "and what about its limits?", "session_id": sid},
    ).json()
    assert follow["session_id"] == sid
    assert follow["intent"]["condensed"] is True
    assert "pod" in follow["intent"]["query"].lower()
    assert follow["citations"] and follow["citations"][0]["document_id"] == "pods.md"
    history = client.get(f"/v1/namespaces/kb/sessions/{sid}").json()
    assert [t["role"] for t in history["turns"]] == ["user", "assistant", "user", "assistant"]
    assert history["turns"][2]["content"] == "and what about its limits?"
    assert client.delete(f"/v1/namespaces/kb/sessions/{sid}").status_code == 204
    r = client.get(f"/v1/namespaces/kb/sessions/{sid}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"


def test_sessions_are_scoped_to_their_namespace(client: TestClient) -> None:
    _seed(client)
    upload(client, "other", "bread.md", COOKING)
    sid = client.post("/v1/namespaces/kb/chat", json={"message": "What is a Pod?"}).json()[
        "session_id"
    ]
    assert client.get(f"/v1/namespaces/other/sessions/{sid}").status_code == 404


def test_greeting_needs_no_retrieval(client: TestClient) -> None:
    _seed(client)
    body = client.post("/v1/namespaces/kb/chat", json={"message": "hello!"}).json()
    assert body["citations"] == [] and body["intent"]["kind"] == "greeting"


def test_unanswerable_question_says_so(client: TestClient) -> None:
    _seed(client)
    body = client.post(
        "/v1/namespaces/kb/chat", json={"message": "Who won the 1998 football world cup?"}
    ).json()
    assert body["citations"] == []
    assert "could not find" in body["answer"].lower()


def test_streaming_events(client: TestClient) -> None:
    _seed(client)
    with client.stream(
        "POST",
        "/v1/namespaces/kb/chat",
        json={"message": "How is bread made?", "stream": True},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = "".join(r.iter_text())
    events = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    names = [e for e, _ in events]
    assert names[-2:] == ["citations", "done"] and set(names[:-2]) == {"token"}
    text = "".join(d["text"] for e, d in events if e == "token")
    done = events[-1][1]
    assert text == done["answer"] and "flour" in text
    assert done["citations"][0]["document_id"] == "bread.md"
    history = client.get(f"/v1/namespaces/kb/sessions/{done['session_id']}").json()
    assert history["turns"][1]["content"] == text


def test_streaming_errors_before_the_stream_are_statuses(client: TestClient) -> None:
    r = client.post("/v1/namespaces/nope/chat", json={"message": "hi", "stream": True})
    assert r.status_code == 404 and r.json()["error"]["code"] == "namespace_not_found"


def test_chat_bad_inputs(client: TestClient) -> None:
    _seed(client)
    url = "/v1/namespaces/kb/chat"
    cases = [
        (
            dict(content=b"{not json", headers={"content-type": "application/json"}),
            422,
            "invalid_json",
        ),
        (dict(json={}), 422, "invalid_request"),
        (dict(json={"message": ""}), 422, "invalid_request"),
        (dict(json={"message": 42}), 422, "invalid_request"),
        (dict(json={"message": "hi", "session_id": "../../etc"}), 422, "invalid_request"),
        (dict(json={"message": "hi", "surprise": 1}), 422, "invalid_request"),
        (
            dict(content=b"message=hi", headers={"content-type": "text/plain"}),
            415,
            "unsupported_media_type",
        ),
        (dict(json={"message": "x" * 2_000_000}), 413, "payload_too_large"),
        (dict(json={"message": "y" * 9000}), 422, "invalid_request"),
    ]
    for kwargs, status, code in cases:
        r = client.post(url, **kwargs)  # type: ignore[arg-type]
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), kwargs
        assert "Traceback" not in r.text


def test_chat_unknown_namespace(client: TestClient) -> None:
    r = client.post("/v1/namespaces/ghost/chat", json={"message": "anything?"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "namespace_not_found"


def test_search_returns_best_first_and_is_scoped(client: TestClient) -> None:
    _seed(client)
    upload(client, "other", "secret.md", b"# Secret\n\nThe vault combination is 4-8-15.")
    r = client.post("/v1/namespaces/kb/search", json={"query": "yeast dough", "top_k": 3})
    results = r.json()["results"]
    assert results[0]["document_id"] == "bread.md"
    assert set(results[0]) == {"document_id", "chunk_id", "title", "text", "score"}
    assert [x["score"] for x in results] == sorted((x["score"] for x in results), reverse=True)
    leak = client.post("/v1/namespaces/kb/search", json={"query": "vault combination"}).json()
    assert all(x["document_id"] != "secret.md" for x in leak["results"])


def test_search_bad_inputs(client: TestClient) -> None:
    _seed(client)
    r = client.post("/v1/namespaces/kb/search", json={"query": "x", "top_k": 10_000})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = client.post("/v1/namespaces/kb/search", json={"query": "", "top_k": 3})
    assert r.status_code == 422
    r = client.post("/v1/namespaces/nope/search", json={"query": "x"})
    assert r.status_code == 404


# --- a client that goes away mid-stream ----------------------------------------------

TOKENS = ["Pods ", "run ", "containers ", "[1]."]


class SlowModel:
    """Streams ``TOKENS``, but after ``hold_after`` of them it waits forever (None: never,
    the answer ends). Records whether its stream was closed."""

    model_id = "slow"

    def __init__(self, hold_after: int | None) -> None:
        self.hold_after = hold_after
        self.closed = False

    async def generate(self, prompt: Prompt) -> Reply:
        return Reply("".join(TOKENS))

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        try:
            for n, token in enumerate(TOKENS):
                if n == self.hold_after:
                    await anyio.Event().wait()  # an LLM that is still thinking
                yield token
            if self.hold_after == len(TOKENS):
                await anyio.Event().wait()  # ... or has not said it is done
        finally:
            self.closed = True


def _request(route: str, question: str, session: str) -> tuple[str, bytes]:
    if route == "native":
        body: dict[str, Any] = {"message": question, "session_id": session, "stream": True}
        return "/v1/namespaces/kb/chat", json.dumps(body).encode()
    body = {"model": "kb", "stream": True, "messages": [{"role": "user", "content": question}]}
    return "/v1/chat/completions", json.dumps(body).encode()


async def _hang_up(app: Any, path: str, body: bytes, *, after: int, stall: bool) -> list[bytes]:
    """POST ``body`` and disconnect once ``after`` chunks of the response arrived.

    With ``stall`` the ``send`` of that chunk never returns (a client that stopped reading
    before it went away), so the disconnect cancels the response inside ``send``, with the
    event generator suspended at a ``yield``; else the response goes on to the next event.
    """
    gone = anyio.Event()
    requested = False
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body" or not message.get("body"):
            return
        chunks.append(message["body"])
        if len(chunks) == after:
            gone.set()
            if stall:
                await anyio.sleep_forever()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    with anyio.fail_after(10):
        await app(scope, receive, send)
    return chunks


def _turns_answered(client: TestClient) -> float:
    text = client.get("/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ragtide_chat_turns_total"
    )


ABANDONED = "ragtide_chat_streams_abandoned_total"


@pytest.mark.parametrize("route", ["native", "openai"])
@pytest.mark.parametrize("stall", [False, True], ids=["waiting-for-the-model", "in-send"])
def test_a_client_that_goes_away_mid_stream_abandons_the_turn(
    client: TestClient, route: str, stall: bool
) -> None:
    _seed(client)
    model = SlowModel(hold_after=1)
    client.app.state.runtime.chat_model = model  # type: ignore[attr-defined]
    question, session = f"How do pods run {uuid.uuid4().hex[:8]}?", uuid.uuid4().hex
    abandoned, answered = metric_value(client, ABANDONED), _turns_answered(client)
    path, body = _request(route, question, session)
    first = 1 if route == "native" else 2  # the OpenAI stream opens with the role chunk

    chunks = client.portal.call(  # type: ignore[union-attr]
        lambda: _hang_up(client.app, path, body, after=first, stall=stall)
    )

    assert len(chunks) == first and b"Pods" in chunks[-1]
    assert model.closed, "the model's stream is closed before the response returns"
    assert metric_value(client, ABANDONED) == abandoned + 1
    assert _turns_answered(client) == answered
    assert client.get(f"/v1/namespaces/kb/sessions/{session}").status_code == 404
    # Nothing was cached: the next ask streams from the model again (and is saved).
    client.app.state.runtime.chat_model = again = SlowModel(hold_after=None)  # type: ignore[attr-defined]
    with client.stream("POST", path, json=json.loads(body)) as r:
        text = "".join(r.iter_text())
    assert again.closed and "[1]." in text
    assert _turns_answered(client) == answered + 1
    if route == "native":
        turns = client.get(f"/v1/namespaces/kb/sessions/{session}").json()["turns"]
        assert [t["content"] for t in turns] == [question, "".join(TOKENS)]


@pytest.mark.parametrize("finish", [False, True], ids=["model-not-done", "model-done"])
def test_going_away_after_the_last_token(client: TestClient, finish: bool) -> None:
    """After the last token the turn is saved iff the model had ended its answer."""
    _seed(client)
    client.app.state.runtime.chat_model = SlowModel(None if finish else len(TOKENS))  # type: ignore[attr-defined]
    question, session = f"How do pods run {uuid.uuid4().hex[:8]}?", uuid.uuid4().hex
    abandoned, answered = metric_value(client, ABANDONED), _turns_answered(client)
    path, body = _request("native", question, session)
    # Not done: the client leaves while the model still works after its last token.
    # Done: the client stops reading at ``citations`` (the turn was committed before it).
    after = len(TOKENS) + (1 if finish else 0)

    chunks = client.portal.call(  # type: ignore[union-attr]
        lambda: _hang_up(client.app, path, body, after=after, stall=finish)
    )

    assert len(chunks) == after and not any(b"event: done" in c for c in chunks)
    r = client.get(f"/v1/namespaces/kb/sessions/{session}")
    if finish:
        assert b"event: citations" in chunks[-1]
        assert [t["content"] for t in r.json()["turns"]] == [question, "".join(TOKENS)]
        assert metric_value(client, ABANDONED) == abandoned
        assert _turns_answered(client) == answered + 1
    else:
        assert r.status_code == 404
        assert metric_value(client, ABANDONED) == abandoned + 1
        assert _turns_answered(client) == answered


# --- grounding and tools ------------------------------------------------------------------


def test_the_answer_says_what_the_documents_support(client: TestClient) -> None:
    _seed(client)
    body = client.post("/v1/namespaces/kb/chat", json={"message": "What is a Pod?"}).json()
    grounding = body["grounding"]
    assert set(grounding) == {
        "supported",
        "policy",
        "action",
        "threshold",
        "dropped_citations",
        "attached_citations",
        "sentences",
    }
    assert grounding["supported"] is True and grounding["policy"] == "annotate"
    first = grounding["sentences"][0]
    assert set(first) == {"text", "supported", "support", "citations", "attached"}
    assert first["supported"] is True and 0.5 <= first["support"] <= 1.0
    assert first["citations"] == [body["citations"][0]["index"]]
    assert body["tool_calls"] == []
    greeting = client.post("/v1/namespaces/kb/chat", json={"message": "Hello!"}).json()
    assert greeting["grounding"] is None


def test_the_streams_done_event_carries_the_grounding(client: TestClient) -> None:
    _seed(client)
    with client.stream(
        "POST", "/v1/namespaces/kb/chat", json={"message": "What is a Pod?", "stream": True}
    ) as r:
        raw = "".join(r.iter_text())
    last = raw.strip().split("\n\n")[-1].splitlines()
    assert last[0] == "event: done"
    done = json.loads(last[1].split(": ", 1)[1])
    assert done["grounding"]["supported"] is True and done["tool_calls"] == []


def test_the_openapi_document_describes_the_answer(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ok = spec["paths"]["/v1/namespaces/{namespace}/chat"]["post"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatAnswer"
    }
    answer = spec["components"]["schemas"]["ChatAnswer"]
    assert {"grounding", "tool_calls", "citations", "answer"} <= set(answer["properties"])
    sentence = spec["components"]["schemas"]["ChatSentence"]
    assert {"supported", "support", "citations", "attached"} <= set(sentence["properties"])
    events = ok["content"]["text/event-stream"]["schema"]["properties"]["event"]["enum"]
    assert {"tool_call", "tool_result", "done"} <= set(events)
