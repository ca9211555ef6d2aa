"""ragtide.v1.Ragtide through a real grpc.aio client: the same answers, credentials,
scopes, quotas and errors as the HTTP API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ragtide.grpc.status import ERROR_CODE_KEY, RETRY_AFTER_KEY
from tests.api.conftest import COOKING, KUBE
from tests.grpc.conftest import Stack, bearer, grpc_settings, open_stack, pb, pb_grpc

pytestmark = pytest.mark.anyio


def _trailer(err: grpc.RpcError, key: str) -> str | None:
    for name, value in err.trailing_metadata() or ():
        if name == key:
            return str(value)
    return None


def _error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None and status.code == err.code().value[0]
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo in the status details")


async def _refused(call: object, code: grpc.StatusCode, error: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    _assert_refusal(caught.value, code, error)
    return caught.value


def _assert_refusal(err: grpc.RpcError, code: grpc.StatusCode, error: str) -> None:
    """``err`` (of either client) carries ``code`` and our ``error`` code, in the trailers
    and in the rich details."""
    assert err.code() == code, (err.code(), err.details())
    assert _trailer(err, ERROR_CODE_KEY) == error
    info = _error_info(err)
    assert (info.reason, info.domain) == (error, "ragtide")


# --- chat ---------------------------------------------------------------------------------


async def test_unary_chat_answers_with_citations_and_keeps_the_session(stack: Stack) -> None:
    md = stack.keys["acme"]
    request = pb.ChatRequest(namespace="kb", message="What is a Pod in Kubernetes?")
    reply = await stack.stub.Chat(request, metadata=md, timeout=10)
    assert reply.answer.startswith("word0 ")
    assert reply.session_id
    assert [c.index for c in reply.citations] == [1]
    assert reply.citations[0].document_id == "kube.md"
    assert reply.intent.kind
    # the same session as over HTTP
    r = await stack.http.get(f"/v1/namespaces/kb/sessions/{reply.session_id}", headers=dict(md))
    assert r.status_code == 200
    assert [t["role"] for t in r.json()["turns"]] == ["user", "assistant"]
    again = pb.ChatRequest(namespace="kb", message="and its limits?", session_id=reply.session_id)
    second = await stack.stub.Chat(again, metadata=md, timeout=10)
    assert second.session_id == reply.session_id


async def test_streaming_chat_sends_tokens_then_citations_then_done(stack: Stack) -> None:
    request = pb.ChatRequest(namespace="kb", message="How do Pods share resources?")
    events = [e async for e in stack.stub.StreamChat(request, metadata=stack.keys["acme"])]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-2:] == ["citations", "done"]
    assert set(kinds[:-2]) == {"token"} and len(kinds) >= 3
    text = "".join(e.token.text for e in events[:-2])
    done = events[-1].done
    assert done.answer == text
    assert events[-2].citations.session_id == done.session_id
    assert [c.document_id for c in events[-2].citations.citations] == ["kube.md"]
    assert stack.model.finished == 1 and stack.model.closed_early == 0


async def test_chat_message_is_validated_as_over_http(stack: Stack) -> None:
    md = stack.keys["acme"]
    bad_session = pb.ChatRequest(namespace="kb", message="hi", session_id="no spaces allowed")
    await _refused(
        stack.stub.Chat(bad_session, metadata=md),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_request",
    )
    empty = pb.ChatRequest(namespace="kb", message="")
    await _refused(
        stack.stub.StreamChat(empty, metadata=md).read(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_request",
    )


# --- search and documents -----------------------------------------------------------------


async def test_search_matches_http_search(stack: Stack) -> None:
    md = stack.keys["acme-read"]
    reply = await stack.stub.Search(
        pb.SearchRequest(namespace="kb", query="memory limit kubelet", top_k=2), metadata=md
    )
    r = await stack.http.post(
        "/v1/namespaces/kb/search",
        json={"query": "memory limit kubelet", "top_k": 2},
        headers=dict(md),
    )
    assert r.status_code == 200
    http = r.json()["results"]
    assert [(h.chunk_id, h.score) for h in reply.results] == [
        (h["chunk_id"], h["score"]) for h in http
    ]
    assert reply.results and reply.results[0].document_id == "kube.md"
    too_many = pb.SearchRequest(namespace="kb", query="pods", top_k=10_000)
    await _refused(
        stack.stub.Search(too_many, metadata=md),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_request",
    )


def _upload(
    header: pb.UploadHeader, data: bytes, piece: int = 1000
) -> list[pb.UploadDocumentRequest]:
    parts = [pb.UploadDocumentRequest(header=header)]
    parts += [
        pb.UploadDocumentRequest(chunk=data[i : i + piece]) for i in range(0, len(data), piece)
    ]
    return parts


async def test_client_streaming_upload_then_list(stack: Stack) -> None:
    md = stack.keys["acme"]
    body = COOKING * 40  # ~7 KB in pieces of 1 KB
    header = pb.UploadHeader(namespace="kitchen", filename="bread.md", groups=["bakers"])
    reply = await stack.stub.UploadDocument(iter(_upload(header, body)), metadata=md, timeout=30)
    assert reply.changed and reply.namespace == "kitchen"
    (doc,) = reply.documents
    assert (doc.document_id, doc.status) == ("bread.md", "created") and doc.chunks > 0
    again = await stack.stub.UploadDocument(iter(_upload(header, body)), metadata=md, timeout=30)
    assert not again.changed and again.documents[0].status == "unchanged"

    listed = await stack.stub.ListDocuments(
        pb.ListDocumentsRequest(namespace="kitchen"), metadata=md
    )
    assert [d.id for d in listed.documents] == ["bread.md"]
    assert not listed.HasField("next")
    assert dict(listed.documents[0].metadata)["acl_groups"] == ["bakers"]
    r = await stack.http.get("/v1/namespaces/kitchen/documents", headers=dict(md))
    assert [d["id"] for d in r.json()["documents"]] == ["bread.md"]  # the same store

    await stack.stub.UploadDocument(
        iter(_upload(pb.UploadHeader(namespace="kitchen", filename="k.md"), KUBE)), metadata=md
    )
    page = await stack.stub.ListDocuments(
        pb.ListDocumentsRequest(namespace="kitchen", limit=1), metadata=md
    )
    assert [d.id for d in page.documents] == ["bread.md"] and page.next == "bread.md"
    rest = await stack.stub.ListDocuments(
        pb.ListDocumentsRequest(namespace="kitchen", limit=1, after=page.next), metadata=md
    )
    assert [d.id for d in rest.documents] == ["k.md"] and not rest.HasField("next")


async def test_upload_refusals(stack: Stack) -> None:
    md = stack.keys["acme"]
    no_header = [pb.UploadDocumentRequest(chunk=b"text")]
    await _refused(
        stack.stub.UploadDocument(iter(no_header), metadata=md),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_request",
    )
    unknown_type = _upload(pb.UploadHeader(namespace="kb", filename="x.exe"), b"MZ\x90\x00")
    await _refused(
        stack.stub.UploadDocument(iter(unknown_type), metadata=md),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unsupported_media_type",
    )


async def test_upload_size_limit_is_enforced_while_receiving(tmp_path: Path) -> None:
    settings = grpc_settings(tmp_path, http={"max_upload_bytes": 50_000})
    async with open_stack(settings) as stack:
        sent = 0

        def parts() -> Iterator[pb.UploadDocumentRequest]:
            nonlocal sent
            yield pb.UploadDocumentRequest(header=pb.UploadHeader(namespace="kb", filename="a.txt"))
            for _ in range(1000):  # 10 MB offered, refused after ~50 KB
                sent += 1
                yield pb.UploadDocumentRequest(chunk=b"a" * 10_000)

        # The synchronous client, in a thread: grpcio's asyncio client can report a write
        # that fails as the server ends the call as its own INTERNAL error instead of the
        # server's status (grpc/grpc#36066); the blocking client reports what was sent.
        def upload_too_much() -> grpc.RpcError:
            with grpc.insecure_channel(f"127.0.0.1:{stack.server.port}") as channel:
                stub = pb_grpc.RagtideStub(channel)
                with pytest.raises(grpc.RpcError) as refused:
                    stub.UploadDocument(parts(), metadata=stack.keys["acme"], timeout=30)
                return refused.value

        err = await asyncio.to_thread(upload_too_much)
        _assert_refusal(err, grpc.StatusCode.RESOURCE_EXHAUSTED, "payload_too_large")
        assert sent < 1000  # the server did not wait for the whole file
        declared = pb.UploadHeader(namespace="kb", filename="a.txt", size=60_000)
        await _refused(
            stack.stub.UploadDocument(
                iter([pb.UploadDocumentRequest(header=declared)]), metadata=stack.keys["acme"]
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "payload_too_large",
        )


# --- credentials, scopes, tenants, quotas ---------------------------------------------------


async def test_missing_or_invalid_credentials_are_unauthenticated(stack: Stack) -> None:
    request = pb.SearchRequest(namespace="kb", query="pods")
    await _refused(stack.stub.Search(request), grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")
    await _refused(
        stack.stub.Search(request, metadata=bearer("rt_" + "x" * 40)),
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated",
    )
    await _refused(
        stack.stub.Search(request, metadata=(("authorization", "Basic dXNlcg=="),)),
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated",
    )
    stream = stack.stub.StreamChat(pb.ChatRequest(namespace="kb", message="hi"))
    await _refused(stream.read(), grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")


async def test_another_tenants_namespace_is_not_found(stack: Stack) -> None:
    other = stack.keys["other"]
    await _refused(
        stack.stub.Search(pb.SearchRequest(namespace="kb", query="pods"), metadata=other),
        grpc.StatusCode.NOT_FOUND,
        "namespace_not_found",
    )
    await _refused(
        stack.stub.Chat(pb.ChatRequest(namespace="kb", message="pods?"), metadata=other),
        grpc.StatusCode.NOT_FOUND,
        "namespace_not_found",
    )
    await _refused(
        stack.stub.ListDocuments(pb.ListDocumentsRequest(namespace="kb"), metadata=other),
        grpc.StatusCode.NOT_FOUND,
        "namespace_not_found",
    )


async def test_read_only_key_cannot_upload(stack: Stack) -> None:
    parts = _upload(pb.UploadHeader(namespace="kb", filename="x.md"), b"# X\n\nsome text\n")
    await _refused(
        stack.stub.UploadDocument(iter(parts), metadata=stack.keys["acme-read"]),
        grpc.StatusCode.PERMISSION_DENIED,
        "forbidden",
    )
    write_only = await stack.key("acme", ["write"])
    await _refused(
        stack.stub.Search(pb.SearchRequest(namespace="kb", query="pods"), metadata=write_only),
        grpc.StatusCode.PERMISSION_DENIED,
        "forbidden",
    )


async def test_rate_limit_is_resource_exhausted_with_retry_info(stack: Stack) -> None:
    await stack.put_tenant("slowpoke", name="Slow", quotas={"search_per_second": 0.1})
    md = await stack.key("slowpoke", ["read"])
    request = pb.SearchRequest(namespace="kb", query="pods")
    # The first search is admitted (then the namespace does not exist in this tenant).
    await _refused(
        stack.stub.Search(request, metadata=md), grpc.StatusCode.NOT_FOUND, "namespace_not_found"
    )
    err = await _refused(
        stack.stub.Search(request, metadata=md), grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited"
    )
    assert int(_trailer(err, RETRY_AFTER_KEY) or 0) >= 1
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(retry) == 1


# --- deadlines and cancellation -----------------------------------------------------------


async def test_a_deadline_shorter_than_the_model_is_deadline_exceeded(stack: Stack) -> None:
    stack.model.config.delay_s = 0.5  # ~3 s for the whole answer
    request = pb.ChatRequest(namespace="kb", message="What is a Pod?")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Chat(request, metadata=stack.keys["acme"], timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    stream = stack.stub.StreamChat(request, metadata=stack.keys["acme"], timeout=0.8)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(stack.model.closed.wait(), 5)  # the server stopped generating
    assert stack.model.finished == 0


async def test_cancelling_a_stream_stops_the_generation(stack: Stack) -> None:
    stack.model.config.delay_s = 0.3
    stream = stack.stub.StreamChat(
        pb.ChatRequest(namespace="kb", message="What is a Pod?"), metadata=stack.keys["acme"]
    )
    first = await stream.read()
    assert first.WhichOneof("event") == "token"
    assert stream.cancel()
    await asyncio.wait_for(stack.model.closed.wait(), 5)
    assert (stack.model.opened, stack.model.finished, stack.model.closed_early) == (1, 0, 1)
    # nothing was saved: the abandoned turn left no session behind
    memory = stack.app.state.runtime.memory
    assert await memory.load("acme/kb", "none", 10) == []


async def test_a_stream_the_client_abandons_is_closed(stack: Stack) -> None:
    """The client stops reading and drops the call (and its channel) without cancelling."""
    import grpc.aio as aio

    from ragtide.grpc.stubs import pb_grpc

    stack.model.config.delay_s = 0.3
    channel = aio.insecure_channel(f"127.0.0.1:{stack.server.port}")
    stub = pb_grpc.RagtideStub(channel)
    stream = stub.StreamChat(
        pb.ChatRequest(namespace="kb", message="What is a Pod?"), metadata=stack.keys["acme"]
    )
    assert (await stream.read()).WhichOneof("event") == "token"
    del stream
    await channel.close(grace=None)  # the connection goes away mid-stream
    await asyncio.wait_for(stack.model.closed.wait(), 5)
    assert stack.model.finished == 0
