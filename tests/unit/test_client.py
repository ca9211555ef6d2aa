"""ragtide.client's own logic against httpx.MockTransport: requests, parsing, errors, retries,
server-sent events and uploads (tests/integration/test_client_remote.py runs it for real)."""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragtide.client import (
    AsyncClient,
    ChatAnswer,
    ChatToken,
    Client,
    CreatedKey,
    NotFound,
    QuotaExceeded,
    RagtideAPIError,
    RagtideConnectionError,
    RateLimited,
    Retry,
    SearchHit,
    ServiceUnavailable,
    SSEDecoder,
    SSEEvent,
    Unauthenticated,
    UpstreamError,
)

Handler = Callable[[httpx.Request], httpx.Response]

HIT = {"document_id": "d1", "chunk_id": "d1#0", "title": "T", "text": "x", "score": 0.5}
ANSWER = {
    "session_id": "s1",
    "answer": "Pods run containers [1].",
    "citations": [{"index": 1, **HIT}],
    "intent": {"kind": "question", "query": "pods", "condensed": False},
}


def error(status: int, code: str, message: str = "no", **headers: str) -> httpx.Response:
    body = {"error": {"code": code, "message": message}}
    return httpx.Response(status, json=body, headers=headers)


class Recorder:
    """A MockTransport handler answering from a list, recording each request."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request)


def client(handler: Recorder, sleeps: list[float] | None = None, **kw: Any) -> Client:
    return Client(
        "http://ragtide.test",
        api_key="rt_key",
        transport=httpx.MockTransport(handler),
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
        retry=kw.pop("retry", Retry(jitter=False)),
        **kw,
    )


def async_client(handler: Recorder, sleeps: list[float] | None = None) -> AsyncClient:
    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    return AsyncClient(
        "http://ragtide.test",
        api_key="rt_key",
        transport=httpx.MockTransport(handler),
        sleep=sleep,
        retry=Retry(jitter=False),
    )


# --- requests and typed results ------------------------------------------------------------


def test_search_sends_the_query_and_parses_hits() -> None:
    rec = Recorder(httpx.Response(200, json={"results": [HIT]}))
    with client(rec) as rt:
        hits = rt.search("pods?", namespace="kb", top_k=3)
    assert hits == [SearchHit("d1", "d1#0", "T", "x", 0.5)]
    req = rec.requests[0]
    assert (req.method, req.url.path) == ("POST", "/v1/namespaces/kb/search")
    assert json.loads(req.content) == {"query": "pods?", "top_k": 3}
    assert req.headers["authorization"] == "Bearer rt_key"
    assert req.headers["user-agent"].startswith("ragtide-client/")


def test_chat_parses_the_answer_and_sends_the_session() -> None:
    rec = Recorder(httpx.Response(200, json=ANSWER))
    with client(rec) as rt:
        answer = rt.chat("and limits?", session_id="s1")
    assert answer.session_id == "s1" and answer.text.endswith("[1].")
    assert answer.citations[0].index == 1 and answer.citations[0].document_id == "d1"
    assert answer.intent is not None and answer.intent.kind == "question"
    assert json.loads(rec.requests[0].content) == {"message": "and limits?", "session_id": "s1"}
    assert rec.requests[0].url.path == "/v1/namespaces/default/chat"


def test_lists_iterate_over_every_page() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        docs = {None: (["a", "b"], "b"), "b": (["c"], None)}[after]
        body = {
            "documents": [{"id": i, "title": i.upper(), "chunks": 1} for i in docs[0]],
            "next": docs[1],
        }
        return httpx.Response(200, json=body)

    rec = Recorder(page)
    with client(rec) as rt:
        docs = list(rt.list_documents("kb", page_size=2))
    assert [d.id for d in docs] == ["a", "b", "c"]
    assert [r.url.params.get("after") for r in rec.requests] == [None, "b"]
    assert all(r.url.params["limit"] == "2" for r in rec.requests)


def test_document_ids_are_quoted_in_paths() -> None:
    rec = Recorder(httpx.Response(200, json={"id": "dir/a b?.md", "title": "", "chunks": 2}))
    with client(rec) as rt:
        doc = rt.get_document("kb", "dir/a b?.md")
    assert doc.id == "dir/a b?.md" and doc.chunks == 2
    assert rec.requests[0].url.raw_path == b"/v1/namespaces/kb/documents/dir/a%20b%3F.md"


def test_admin_helpers() -> None:
    key = {"id": "k1", "tenant": "acme", "prefix": "rt_ab", "scopes": ["read"], "key": "rt_secret"}
    rec = Recorder(httpx.Response(201, json=key))
    with client(rec) as rt:
        created = rt.create_key("acme", ["read"], namespaces=["docs"], description="ci")
    assert isinstance(created, CreatedKey) and created.key == "rt_secret"
    assert created.info.scopes == ("read",) and created.info.namespaces is None
    assert "rt_secret" not in repr(created)
    assert json.loads(rec.requests[0].content) == {
        "scopes": ["read"],
        "description": "ci",
        "namespaces": ["docs"],
    }


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGTIDE_URL", "http://from-env.test:9000/")
    monkeypatch.setenv("RAGTIDE_API_KEY", "rt_env")
    rec = Recorder(httpx.Response(200, json={"results": []}))
    with Client(transport=httpx.MockTransport(rec)) as rt:
        assert rt.search("q") == []
    assert str(rec.requests[0].url) == "http://from-env.test:9000/v1/namespaces/default/search"
    assert rec.requests[0].headers["authorization"] == "Bearer rt_env"


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "cls", "code"),
    [
        (error(401, "unauthenticated"), Unauthenticated, "unauthenticated"),
        (error(404, "namespace_not_found"), NotFound, "namespace_not_found"),
        (error(422, "invalid_namespace"), RagtideAPIError, "invalid_namespace"),
        (httpx.Response(502, text="<html>bad gateway</html>"), UpstreamError, "http_error"),
    ],
)
def test_errors_are_exceptions_with_the_code(
    response: httpx.Response, cls: type[RagtideAPIError], code: str
) -> None:
    response.headers["x-request-id"] = "req-1"
    with client(Recorder(response)) as rt, pytest.raises(cls) as caught:
        rt.search("q")
    assert (caught.value.status, caught.value.code) == (response.status_code, code)
    assert caught.value.request_id == "req-1"
    assert code in str(caught.value)


# --- retries -------------------------------------------------------------------------------


def test_429_is_retried_after_its_retry_after() -> None:
    sleeps: list[float] = []
    rec = Recorder(
        error(429, "rate_limited", **{"Retry-After": "2"}),
        httpx.Response(200, json={"results": [HIT]}),
    )
    with client(rec, sleeps) as rt:
        assert len(rt.search("q")) == 1
    assert sleeps == [2.0] and len(rec.requests) == 2


def test_retry_after_as_an_http_date() -> None:
    sleeps: list[float] = []
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    rec = Recorder(
        error(503, "backend_unavailable", **{"Retry-After": when}),
        httpx.Response(200, json=ANSWER),
    )
    with client(rec, sleeps) as rt:
        rt.chat("hi")
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 30


def test_retries_are_bounded() -> None:
    sleeps: list[float] = []
    rec = Recorder(error(503, "backend_unavailable", **{"Retry-After": "1"}))
    with client(rec, sleeps, retry=Retry(attempts=4, jitter=False)) as rt:
        with pytest.raises(ServiceUnavailable) as caught:
            rt.search("q")
    assert len(rec.requests) == 4 and sleeps == [1.0, 1.0, 1.0]
    assert caught.value.retry_after == 1.0


def test_backoff_without_retry_after() -> None:
    sleeps: list[float] = []
    rec = Recorder(error(503, "backend_unavailable"))
    policy = Retry(attempts=4, backoff=0.5, max_backoff=1.5, jitter=False)
    with client(rec, sleeps, retry=policy) as rt, pytest.raises(ServiceUnavailable):
        rt.search("q")
    assert sleeps == [0.5, 1.0, 1.5]


def test_a_long_retry_after_is_not_waited_for() -> None:
    sleeps: list[float] = []
    rec = Recorder(error(429, "quota_exceeded", **{"Retry-After": "3600"}))
    with client(rec, sleeps) as rt, pytest.raises(QuotaExceeded) as caught:
        rt.chat("hi")
    assert isinstance(caught.value, RateLimited) and caught.value.retry_after == 3600
    assert sleeps == [] and len(rec.requests) == 1


def test_other_errors_are_not_retried() -> None:
    rec = Recorder(error(500, "plugin_failed"))
    with client(rec, []) as rt, pytest.raises(RagtideAPIError):
        rt.search("q")
    assert len(rec.requests) == 1


def test_connection_errors_retry_only_what_is_safe() -> None:
    refused = httpx.ConnectError("refused")
    broken = httpx.ReadError("reset")
    # Nothing was sent: even a chat turn is tried again.
    rec = Recorder(refused, httpx.Response(200, json=ANSWER))
    with client(rec, []) as rt:
        assert rt.chat("hi").session_id == "s1"
    # The connection broke after sending: an idempotent search is retried ...
    rec = Recorder(broken, httpx.Response(200, json={"results": []}))
    with client(rec, []) as rt:
        assert rt.search("q") == []
    # ... a chat turn (which saves turns) is not.
    rec = Recorder(broken, httpx.Response(200, json=ANSWER))
    with client(rec, []) as rt, pytest.raises(RagtideConnectionError):
        rt.chat("hi")
    assert len(rec.requests) == 1
    # Bounded either way.
    rec = Recorder(refused)
    with client(rec, []) as rt, pytest.raises(RagtideConnectionError):
        rt.search("q")
    assert len(rec.requests) == 3


# --- server-sent events --------------------------------------------------------------------


def sse(*events: tuple[str, Any]) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
    )


def test_sse_decoder_follows_the_rules() -> None:
    d = SSEDecoder()
    lines = [": a comment", "event: token", "data: a", "data:b", "id: 7", "", "", "data: x", ""]
    events = [e for e in (d.feed(line) for line in lines) if e is not None]
    assert events == [SSEEvent("token", "a\nb"), SSEEvent("message", "x")]
    d.feed("event: done")
    assert d.flush() is None  # no data: nothing is dispatched
    d.feed("data: tail")
    assert d.flush() == SSEEvent("message", "tail")


def test_chat_stream_yields_tokens_then_the_answer() -> None:
    body = sse(
        ("token", {"text": "Pods "}),
        ("token", {"text": "run."}),
        ("citations", {"session_id": "s1", "citations": ANSWER["citations"]}),
        ("done", ANSWER),
    ).replace(b"\n", b"\r\n")
    rec = Recorder(httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))
    with client(rec) as rt:
        items = list(rt.chat_stream("pods?", namespace="kb"))
    assert items[:2] == [ChatToken("Pods "), ChatToken("run.")]
    assert isinstance(items[2], ChatAnswer) and items[2].citations[0].document_id == "d1"
    assert len(items) == 3
    assert json.loads(rec.requests[0].content) == {"message": "pods?", "stream": True}


def test_chat_stream_error_in_band_and_a_cut_stream() -> None:
    body = sse(("token", {"text": "x"}), ("error", {"code": "upstream_timeout", "status": 504}))
    with client(Recorder(httpx.Response(200, content=body))) as rt:
        stream = rt.chat_stream("q")
        assert next(stream) == ChatToken("x")
        with pytest.raises(UpstreamError) as caught:
            next(stream)
    assert (caught.value.status, caught.value.code) == (504, "upstream_timeout")
    cut = sse(("token", {"text": "x"}))
    with client(Recorder(httpx.Response(200, content=cut))) as rt, pytest.raises(RagtideAPIError):
        list(rt.chat_stream("q"))


def test_chat_stream_retries_before_it_starts() -> None:
    sleeps: list[float] = []
    rec = Recorder(
        error(429, "rate_limited", **{"Retry-After": "1"}),
        httpx.Response(200, content=sse(("done", ANSWER))),
    )
    with client(rec, sleeps) as rt:
        assert [type(i) for i in rt.chat_stream("q")] == [ChatAnswer]
    assert sleeps == [1.0]


# --- uploads -------------------------------------------------------------------------------


def _form(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    raw = b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw + request.content)
    out: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        out[name] = (part.get_filename(), part.get_payload(decode=True))
    return out


UPLOADED = {
    "namespace": "kb",
    "documents": [{"source": "a.md", "document_id": "a.md", "status": "created", "chunks": 2}],
}


def test_upload_sends_a_multipart_body_with_progress(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    data = b"# Guide\n\n" + b"word " * 40_000  # several chunks
    path.write_bytes(data)
    progress: list[tuple[int, int]] = []
    rec = Recorder(httpx.Response(201, json=UPLOADED))
    with client(rec) as rt:
        result = rt.upload(
            "kb",
            path,
            document_id="g1",
            groups=["eng", "ops"],
            progress=lambda sent, total: progress.append((sent, total)),
        )
    assert result.changed and result.documents[0].status == "created"
    req = rec.requests[0]
    assert req.url.path == "/v1/namespaces/kb/documents"
    assert int(req.headers["content-length"]) == len(req.content)
    form = _form(req)
    assert form["file"] == ("guide.md", data)
    assert form["document_id"] == (None, b"g1") and form["groups"] == (None, b"eng,ops")
    total = len(req.content)
    assert progress[0] == (0, total) and progress[-1] == (total, total)
    assert len(progress) > 3 and [s for s, _ in progress] == sorted(s for s, _ in progress)


def test_upload_of_bytes_is_rebuilt_for_a_retry() -> None:
    sleeps: list[float] = []
    progress: list[int] = []
    rec = Recorder(
        error(503, "backend_unavailable", **{"Retry-After": "1"}),
        httpx.Response(200, json={**UPLOADED, "documents": []}),
    )
    with client(rec, sleeps) as rt:
        result = rt.upload(
            "kb", b"hello", filename="h.txt", progress=lambda s, t: progress.append(s)
        )
    assert not result.changed and sleeps == [1.0]
    assert [_form(r)["file"] for r in rec.requests] == [("h.txt", b"hello")] * 2
    assert progress.count(0) == 2  # the second try starts again


def test_upload_refused_raises_its_error() -> None:
    rec = Recorder(error(415, "unsupported_media_type", "unknown file type"))
    with client(rec) as rt, pytest.raises(RagtideAPIError) as caught:
        rt.upload("kb", b"\x00\x01", filename="x.bin")
    assert (caught.value.status, caught.value.code) == (415, "unsupported_media_type")


# --- the async client ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_client_does_the_same() -> None:
    sleeps: list[float] = []

    def route(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/search"):
            return httpx.Response(200, json={"results": [HIT]})
        if path.endswith("/chat") and json.loads(request.content).get("stream"):
            return httpx.Response(200, content=sse(("token", {"text": "a"}), ("done", ANSWER)))
        if path.endswith("/documents") and request.method == "POST":
            assert _form(request)["file"] == ("a.md", b"# A")
            return httpx.Response(201, json=UPLOADED)
        if path.endswith("/documents"):
            after = request.url.params.get("after")
            ids, nxt = (["a"], "a") if after is None else (["b"], None)
            return httpx.Response(200, json={"documents": [{"id": i} for i in ids], "next": nxt})
        return error(404, "namespace_not_found")

    rec = Recorder(error(429, "rate_limited", **{"Retry-After": "0.5"}), route)
    async with async_client(rec, sleeps) as rt:
        assert [h.document_id for h in await rt.search("q", namespace="kb")] == ["d1"]
        assert sleeps == [0.5]
        items = [item async for item in rt.chat_stream("q")]
        assert items[0] == ChatToken("a") and isinstance(items[1], ChatAnswer)
        sent: list[int] = []
        uploaded = await rt.upload(
            "kb", b"# A", filename="a.md", progress=lambda s, t: sent.append(s)
        )
        assert uploaded.changed and sent[-1] > 0
        assert [d.id async for d in rt.list_documents("kb")] == ["a", "b"]
        with pytest.raises(NotFound) as caught:
            await rt.get_namespace("missing")
    assert caught.value.code == "namespace_not_found"
