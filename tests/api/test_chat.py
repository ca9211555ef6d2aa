from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.api.conftest import COOKING, KUBE, upload


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
