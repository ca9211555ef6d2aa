"""The task model: request validation, ids, fingerprints, messages, attempt counting."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from ragtide.errors import InvalidNamespace, InvalidRequest, NamespaceNotFound
from ragtide.ingest.parsers import parse
from ragtide.worker.tasks import (
    ChatTaskRequest,
    IngestTaskRequest,
    InlineDocument,
    TaskMessage,
    decode_message,
    delivery_attempt,
    describe_error,
    documents_jsonl,
    fingerprint,
    new_record,
    parse_request,
    public,
    task_id_for,
)

QUEUE = "ragtide.tasks"


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def test_a_chat_and_an_ingest_request_parse() -> None:
    chat = parse_request(body(kind="chat", message="hi", session_id="s-1"))
    assert isinstance(chat, ChatTaskRequest) and chat.message == "hi" and chat.session_id == "s-1"
    ingest = parse_request(body(kind="ingest", documents=[{"id": "a", "text": "x"}]))
    assert isinstance(ingest, IngestTaskRequest)
    assert ingest.documents == [InlineDocument(id="a", title="", text="x")]


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "shout", "message": "hi"},  # unknown kind
        {"message": "hi"},  # no kind
        {"kind": "chat"},  # no message
        {"kind": "chat", "message": ""},
        {"kind": "chat", "message": "hi", "colour": "blue"},  # unknown field
        {"kind": "chat", "message": "hi", "session_id": "a b"},
        {"kind": "chat", "message": "hi", "session_id": "x" * 129},
        {"kind": "chat", "message": "hi", "idempotency_key": "no spaces"},
        {"kind": "chat", "message": "hi", "idempotency_key": ""},
        {"kind": "chat", "message": "hi", "callback_url": "ftp://example.com/x"},
        {"kind": "chat", "message": "hi", "callback_url": "not a url"},
        {"kind": "chat", "message": 42},
        {"kind": "ingest", "documents": []},
        {"kind": "ingest"},
        {"kind": "ingest", "documents": [{"id": "a", "text": ""}]},
        {"kind": "ingest", "documents": [{"id": " a", "text": "x"}]},
        {"kind": "ingest", "documents": [{"id": "a\nb", "text": "x"}]},
        {"kind": "ingest", "documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]},
        {"kind": "ingest", "documents": [{"id": f"d{i}", "text": "x"} for i in range(1001)]},
    ],
)
def test_bad_requests_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_request(body(**fields))


@pytest.mark.parametrize("raw", [b"", b"[1", b"null", b"[]", b'"chat"'])
def test_bodies_that_are_no_object_are_refused(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        parse_request(raw)


def test_an_idempotency_key_names_one_task_per_namespace() -> None:
    assert task_id_for("kb", "k1") == task_id_for("kb", "k1")
    assert task_id_for("kb", "k1") != task_id_for("kb", "k2")
    assert task_id_for("kb", "k1") != task_id_for("other", "k1")
    fresh = {task_id_for("kb", None) for _ in range(50)}
    assert len(fresh) == 50
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in fresh | {task_id_for("kb", "k1")})


def test_a_fingerprint_tells_a_retry_from_another_request() -> None:
    a = parse_request(body(kind="chat", message="hi", idempotency_key="k"))
    again = parse_request(body(kind="chat", idempotency_key="k", message="hi"))  # other order
    other = parse_request(body(kind="chat", message="hello", idempotency_key="k"))
    assert fingerprint(a) == fingerprint(again)
    assert fingerprint(a) != fingerprint(other)


def message(**request: Any) -> TaskMessage:
    request = {"kind": "chat", "message": "hi", "session_id": "s", **request}
    return TaskMessage(
        task_id="ab" * 16, namespace="default/kb", request=parse_request(body(**request))
    )


def test_a_message_survives_the_queue() -> None:
    sent = message(callback_url="https://example.com/hook")
    assert decode_message(sent.encode()) == sent
    assert sent.kind == "chat"


def test_a_message_from_before_tenants_is_the_default_tenants() -> None:
    old = message().model_copy(update={"namespace": "kb"})  # queued before the upgrade
    assert decode_message(old.encode()).namespace == "default/kb"


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe not json",
        b"{}",
        b'{"v": 2, "task_id": "' + b"ab" * 16 + b'", "namespace": "kb", "request": {}}',
        b'{"v": 1, "task_id": "short", "namespace": "kb",'
        b' "request": {"kind": "chat", "message": "x"}}',
    ],
)
def test_undecodable_messages_say_why(raw: bytes) -> None:
    with pytest.raises(InvalidRequest, match="undecodable task message"):
        decode_message(raw)


def test_a_message_for_an_invalid_namespace_is_refused() -> None:
    raw = message().encode().replace(b'"default/kb"', b'"../etc"')
    with pytest.raises(InvalidNamespace):
        decode_message(raw)


def test_a_new_record_is_queued_and_public_hides_bookkeeping() -> None:
    m = message(callback_url="https://example.com/hook")
    record = new_record(m, "fp", now=10.0)
    assert record["status"] == "queued" and record["attempts"] == 0
    assert record["session_id"] == "s" and record["callback_url"] == "https://example.com/hook"
    shown = public({**record, "commit": {"x": 1}, "worker": "w"})
    assert shown == {
        "task_id": "ab" * 16,
        "kind": "chat",
        "status": "queued",
        "result": None,
        "error": None,
        "attempts": 0,
        "created_at": 10.0,
        "updated_at": 10.0,
        "session_id": "s",
    }


def test_errors_are_described_by_code_without_internals() -> None:
    assert describe_error(NamespaceNotFound("kb")) == {
        "code": "namespace_not_found",
        "message": "namespace 'kb' does not exist",
    }
    internal = describe_error(RuntimeError("password=hunter2"))
    assert internal["code"] == "internal" and "hunter2" not in internal["message"]


def test_inline_documents_become_the_jsonl_the_pipeline_reads() -> None:
    docs = [
        InlineDocument(id="a/1", title="Alpha", text="First text."),
        InlineDocument(id="b", text='Quotes " and\nnewlines ü.'),
    ]
    parsed = parse("task.jsonl", documents_jsonl(docs))
    assert [(d.id, d.title, d.text) for d in parsed] == [
        ("a/1", "Alpha", "First text."),
        ("b", "", 'Quotes " and\nnewlines ü.'),
    ]


@pytest.mark.parametrize(
    ("headers", "redelivered", "attempt"),
    [
        (None, False, 1),
        ({}, True, 2),  # a classic queue only says "not the first"
        ({"x-delivery-count": 0}, False, 1),
        ({"x-delivery-count": 2}, True, 3),
        ({"x-delivery-count": True}, False, 1),  # not a count
        ({"x-death": [{"queue": QUEUE, "count": 2, "reason": "rejected"}]}, True, 3),
        ({"x-death": [{"queue": "elsewhere", "count": 5}]}, False, 1),
        (
            {
                "x-delivery-count": 1,
                "x-death": [{"queue": QUEUE, "count": 7}],
            },
            True,
            2,
        ),
    ],
)
def test_delivery_attempts_are_counted_from_broker_headers(
    headers: dict[str, Any] | None, redelivered: bool, attempt: int
) -> None:
    assert delivery_attempt(headers, redelivered, QUEUE) == attempt
