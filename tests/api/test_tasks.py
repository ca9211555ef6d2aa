"""POST/GET /v1/namespaces/{ns}/tasks against the real RabbitMQ and Redis on 127.0.0.1.

Each test publishes to its own queue (deleted afterwards) and keeps its records under its
own Redis prefix (removed afterwards). No worker runs here: what a submission leaves in
the queue and in the result store is inspected directly (tests/integration/test_worker.py
runs workers).
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import redis
from fastapi.testclient import TestClient

from ragtide.api.app import create_app
from ragtide.worker.broker import NAMESPACE_HEADER, dead_letter_queue
from ragtide.worker.tasks import decode_message, task_id_for
from tests.api.conftest import make_settings

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
REDIS = "redis://127.0.0.1:6379/0"
NS = "kb"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Broker:
    queue: str

    def _run(self, fn: Any) -> Any:
        async def main() -> Any:
            connection = await aio_pika.connect(AMQP)
            try:
                return await fn(await connection.channel())
            finally:
                await connection.close()

        return asyncio.run(main())

    def depth(self) -> int:
        async def fn(channel: aio_pika.abc.AbstractChannel) -> int:
            try:
                declared = await channel.declare_queue(self.queue, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return 0
            return int(declared.declaration_result.message_count or 0)

        return int(self._run(fn))

    def messages(self) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Every message in the queue (they go back when the connection closes)."""

        async def fn(channel: aio_pika.abc.AbstractChannel) -> list[Any]:
            queue = await channel.declare_queue(self.queue, passive=True)
            out = []
            while (message := await queue.get(fail=False, timeout=5)) is not None:
                out.append(message)
            return out

        return list(self._run(fn))

    def delete(self) -> None:
        async def fn(channel: aio_pika.abc.AbstractChannel) -> None:
            for name in (self.queue, dead_letter_queue(self.queue)):
                await channel.queue_delete(name)

        self._run(fn)


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker(f"test.tasks.{uuid.uuid4().hex[:12]}")
    yield b
    b.delete()


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    yield name
    with redis.Redis.from_url(REDIS) as r:
        keys = list(r.scan_iter(match=f"{name}:*"))
        if keys:
            r.delete(*keys)


def open_client(tmp_path: Path, **overrides: Any) -> TestClient:
    return TestClient(create_app(make_settings(tmp_path, **overrides), configure_logs=False))


@pytest.fixture
def client(tmp_path: Path, broker: Broker, prefix: str) -> Iterator[TestClient]:
    with open_client(
        tmp_path,
        rabbitmq={"url": AMQP, "queue": broker.queue},
        result_store={"use": "redis", "config": {"url": REDIS, "key_prefix": prefix}},
    ) as c:
        assert c.put(f"/v1/namespaces/{NS}").status_code == 201
        yield c


def post(client: TestClient, ns: str = NS, **body: Any) -> Any:
    return client.post(f"/v1/namespaces/{ns}/tasks", json=body)


# --- submitting ----------------------------------------------------------------------


@pytest.mark.integration
def test_a_chat_task_is_accepted_and_queued_durably(client: TestClient, broker: Broker) -> None:
    r = post(client, kind="chat", message="What is a Pod?")
    assert r.status_code == 202
    task = r.json()
    assert task["status"] == "queued" and task["kind"] == "chat" and task["attempts"] == 0
    assert len(task["task_id"]) == 32 and task["session_id"]
    assert r.headers["location"] == f"/v1/namespaces/{NS}/tasks/{task['task_id']}"

    got = client.get(r.headers["location"])
    assert got.status_code == 200 and got.json() == task

    (message,) = broker.messages()
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == task["task_id"] and message.content_type == "application/json"
    assert (message.headers or {})[NAMESPACE_HEADER] == f"default/{NS}"  # the store key
    sent = decode_message(message.body)
    assert (sent.task_id, sent.namespace, sent.kind) == (task["task_id"], f"default/{NS}", "chat")
    assert sent.request.session_id == task["session_id"]  # type: ignore[union-attr]


@pytest.mark.integration
def test_a_session_given_is_kept(client: TestClient) -> None:
    r = post(client, kind="chat", message="hi", session_id="s-7")
    assert r.status_code == 202 and r.json()["session_id"] == "s-7"


@pytest.mark.integration
def test_an_ingest_task_is_accepted(client: TestClient, broker: Broker) -> None:
    docs = [{"id": "a", "title": "A", "text": "Alpha."}, {"id": "b", "text": "Beta."}]
    r = post(client, kind="ingest", documents=docs)
    assert r.status_code == 202 and r.json()["kind"] == "ingest"
    assert "session_id" not in r.json()
    (message,) = broker.messages()
    sent = decode_message(message.body)
    assert [d.id for d in sent.request.documents] == ["a", "b"]  # type: ignore[union-attr]


@pytest.mark.integration
def test_one_idempotency_key_is_one_task(client: TestClient, broker: Broker) -> None:
    first = post(client, kind="chat", message="hi", idempotency_key="order-1")
    again = post(client, kind="chat", message="hi", idempotency_key="order-1")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json()["task_id"] == task_id_for(f"default/{NS}", "order-1")
    assert broker.depth() == 1  # no second message

    reused = post(client, kind="chat", message="something else", idempotency_key="order-1")
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert broker.depth() == 1

    client.put("/v1/namespaces/other")
    elsewhere = post(client, "other", kind="chat", message="hi", idempotency_key="order-1")
    assert elsewhere.status_code == 202 and elsewhere.json()["task_id"] != first.json()["task_id"]
    assert broker.depth() == 2


# --- reading -------------------------------------------------------------------------


@pytest.mark.integration
def test_tasks_are_found_only_in_their_namespace(client: TestClient) -> None:
    task_id = post(client, kind="chat", message="hi").json()["task_id"]
    client.put("/v1/namespaces/other")
    r = client.get(f"/v1/namespaces/other/tasks/{task_id}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "task_not_found"
    r = client.get(f"/v1/namespaces/{NS}/tasks/{'0' * 32}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "task_not_found"
    r = client.get(f"/v1/namespaces/{NS}/tasks/{'x' * 300}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "task_not_found"
    r = client.get(f"/v1/namespaces/missing/tasks/{task_id}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "namespace_not_found"


# --- refusals ------------------------------------------------------------------------


LONG = "x" * 8001


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"kind": "chat"}, 422, "invalid_request"),
        ({"kind": "chat", "message": ""}, 422, "invalid_request"),
        ({"kind": "chat", "message": "   "}, 422, "invalid_request"),
        ({"kind": "chat", "message": LONG}, 422, "invalid_request"),
        ({"kind": "chat", "message": 3}, 422, "invalid_request"),
        ({"kind": "chat", "message": "hi", "extra": 1}, 422, "invalid_request"),
        ({"kind": "chat", "message": "hi", "session_id": "../x"}, 422, "invalid_request"),
        ({"kind": "chat", "message": "hi", "idempotency_key": "a b"}, 422, "invalid_request"),
        ({"kind": "chat", "message": "hi", "callback_url": "file:///x"}, 422, "invalid_request"),
        ({"kind": "dance"}, 422, "invalid_request"),
        ({"message": "hi"}, 422, "invalid_request"),
        ({"kind": "ingest", "documents": []}, 422, "invalid_request"),
        ({"kind": "ingest", "documents": [{"id": "a"}]}, 422, "invalid_request"),
        (
            {"kind": "ingest", "documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]},
            422,
            "invalid_request",
        ),
        ([1, 2], 422, "invalid_request"),
    ],
)
def test_bad_bodies_are_refused_and_nothing_is_queued(
    client: TestClient, broker: Broker, body: Any, status: int, code: str
) -> None:
    r = client.post(f"/v1/namespaces/{NS}/tasks", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    assert broker.depth() == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (
            b'{"kind": "chat", "message": ',
            {"content-type": "application/json"},
            422,
            "invalid_json",
        ),
        (b"", {"content-type": "application/json"}, 422, "invalid_json"),
        (
            b'{"kind":"chat","message":"hi"}',
            {"content-type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        (
            json.dumps({"kind": "chat", "message": "x" * 2_000_000}).encode(),
            {"content-type": "application/json"},
            413,
            "payload_too_large",
        ),
    ],
)
def test_bad_payloads_are_refused(
    client: TestClient,
    broker: Broker,
    content: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    r = client.post(f"/v1/namespaces/{NS}/tasks", content=content, headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    assert broker.depth() == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",  # plain http, not allowed by default
        "https://127.0.0.1/hook",
        "https://localhost:6379/",
        "https://[::1]/hook",
        "https://0x7f000001/hook",
        "https://2130706433/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://metadata.google.internal/",
        "https://10.0.0.5/hook",
        "https://kubernetes.default.svc/api",
        "https://user:secret@example.com/hook",
    ],
)
def test_callback_urls_inside_the_cluster_are_refused_at_acceptance(
    client: TestClient, broker: Broker, url: str
) -> None:
    r = post(client, kind="chat", message="hi", callback_url=url)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_callback_url"
    assert broker.depth() == 0  # nothing queued


@pytest.mark.integration
def test_namespaces_must_exist_and_be_valid(client: TestClient, broker: Broker) -> None:
    r = post(client, "missing", kind="chat", message="hi")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "namespace_not_found")
    r = post(client, "-bad", kind="chat", message="hi")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_namespace")
    assert broker.depth() == 0


def test_without_rabbitmq_tasks_are_disabled(tmp_path: Path) -> None:
    with open_client(tmp_path) as c:
        c.put(f"/v1/namespaces/{NS}")
        r = post(c, kind="chat", message="hi")
        assert r.status_code == 501
        assert r.json()["error"]["code"] == "tasks_disabled"
        r = c.get(f"/v1/namespaces/{NS}/tasks/{'0' * 32}")
        assert (r.status_code, r.json()["error"]["code"]) == (501, "tasks_disabled")


@pytest.mark.integration
def test_broker_down_is_503_and_withdraws_the_task(
    tmp_path: Path, broker: Broker, prefix: str
) -> None:
    with open_client(
        tmp_path,
        rabbitmq={"url": f"amqp://guest:guest@127.0.0.1:{closed_port()}/", "connect_timeout_s": 2},
        result_store={"use": "redis", "config": {"url": REDIS, "key_prefix": prefix}},
    ) as c:
        c.put(f"/v1/namespaces/{NS}")
        r = post(c, kind="chat", message="hi", idempotency_key="k")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "backend_unavailable"
        assert int(r.headers["retry-after"]) >= 1
        gone = c.get(f"/v1/namespaces/{NS}/tasks/{task_id_for(f'default/{NS}', 'k')}")
        assert gone.status_code == 404  # withdrawn: a retry with the same key starts afresh


@pytest.mark.integration
def test_result_store_down_is_503(tmp_path: Path, broker: Broker) -> None:
    down = f"redis://127.0.0.1:{closed_port()}/0"
    with open_client(
        tmp_path,
        rabbitmq={"url": AMQP, "queue": broker.queue},
        result_store={"use": "redis", "config": {"url": down, "retries": 0}},
    ) as c:
        c.put(f"/v1/namespaces/{NS}")
        r = post(c, kind="chat", message="hi")
        assert (r.status_code, r.json()["error"]["code"]) == (503, "backend_unavailable")
        assert "retry-after" in r.headers
        r = c.get(f"/v1/namespaces/{NS}/tasks/{'0' * 32}")
        assert (r.status_code, r.json()["error"]["code"]) == (503, "backend_unavailable")
    assert broker.depth() == 0
