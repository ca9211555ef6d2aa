"""Real ``ragtide worker`` processes on the real RabbitMQ and Redis, fed by a real API.

Every test has its own queue (and dead-letter queue) and its own Redis prefix, removed
afterwards; the workers share one SQLite data directory holding the demo corpus. Tests
wait on observable state (a task's status, a file the test chat model writes when it is
mid-task, a queue's depth), never on time. ``worker_plugins.GatedChatModel`` is loaded by
the workers through an entry point the fixture writes, as any plugin would be.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from ragtide.bench.server import free_port, wait_ready
from ragtide.worker.broker import NAMESPACE_HEADER, dead_letter_queue
from tests.polling import until

pytestmark = pytest.mark.integration

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
REDIS = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]
NS = "kb"


# --- fixtures shared by the module ---------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with the demo corpus in namespace ``kb`` (hashing embedder)."""
    data = tmp_path_factory.mktemp("worker-data")
    subprocess.run(
        [sys.executable, "-m", "ragtide.cli", "ingest", "--demo", "-q", "-n", NS],
        env={**os.environ, "RAGTIDE_DATA_DIR": str(data), "RAGTIDE_EMBEDDER__USE": "hashing"},
        check=True,
        capture_output=True,
    )
    return data


@pytest.fixture(scope="module")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory that, on ``PYTHONPATH``, registers the ``gated`` chat model."""
    root = tmp_path_factory.mktemp("plugins")
    info = root / "ragtide_worker_test_plugins-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ragtide-worker-test-plugins\nVersion: 0.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[ragtide.chat_models]\ngated = tests.integration.worker_plugins:GatedChatModel\n"
    )
    return root


# --- one test's processes, queue and keys --------------------------------------------


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def counted(self, value: float, name: str, **labels: str) -> None:
        """Wait until a metric of this worker reaches ``value`` (it is updated after the ack)."""
        until(lambda: self.metric(name, **labels) == value, f"{name}{labels} == {value}")

    def metric(self, name: str, **labels: str) -> float:
        """A sample of this worker's /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    queue: str
    prefix: str
    gate: Path
    procs: list[Proc] = field(default_factory=list)
    api_url: str = ""

    # processes

    def _spawn(self, args: list[str], port: int, env: dict[str, str], name: str) -> Proc:
        log = self.root / f"{name}-{port}.log"
        with log.open("ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ragtide.cli", *args],
                env={**self.env, **env},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        spawned = Proc(proc, port, log)
        self.procs.append(spawned)
        return spawned

    def start_api(self) -> str:
        port = free_port()
        api = self._spawn(["serve", "--port", str(port)], port, {}, "api")
        self._ready(api)
        self.api_url = api.url
        return api.url

    def start_workers(self, count: int, gated: bool = False, **env: str) -> list[Proc]:
        extra = dict(env)
        if gated:
            extra["RAGTIDE_CHAT_MODEL__USE"] = "gated"
            extra["RAGTIDE_CHAT_MODEL__CONFIG__DIR"] = str(self.gate)
        workers = []
        for _ in range(count):
            port = free_port()
            extra_env = {**extra, "RAGTIDE_WORKER__HOST": "127.0.0.1"}
            extra_env["RAGTIDE_WORKER__PORT"] = str(port)
            workers.append(self._spawn(["worker"], port, extra_env, "worker"))
        for w in workers:
            self._ready(w)
        return workers

    def _ready(self, p: Proc) -> None:
        try:
            wait_ready(p.proc, p.port, time.perf_counter(), timeout=60)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{p.log.name} not ready: {exc}\n{p.tail()}") from exc

    def close(self) -> None:
        for p in self.procs:
            if p.proc.poll() is None:
                p.proc.kill()
            p.proc.wait()
        _amqp(_delete_queues(self.queue))
        with redis.Redis.from_url(REDIS) as r:
            keys = list(r.scan_iter(match=f"{self.prefix}:*"))
            if keys:
                r.delete(*keys)

    # tasks through the API

    def submit(self, message: str, session: str, **extra: Any) -> str:
        body = {"kind": "chat", "message": message, "session_id": session, **extra}
        r = httpx.post(f"{self.api_url}/v1/namespaces/{NS}/tasks", json=body, timeout=10)
        assert r.status_code == 202, r.text
        task_id: str = r.json()["task_id"]
        return task_id

    def task(self, task_id: str) -> dict[str, Any]:
        r = httpx.get(f"{self.api_url}/v1/namespaces/{NS}/tasks/{task_id}", timeout=10)
        assert r.status_code == 200, r.text
        record: dict[str, Any] = r.json()
        return record

    def finished(self, task_id: str, status: str = "done") -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            record = self.task(task_id)
            return record if record["status"] == status else None

        return until(check, f"task {task_id} to be {status}")

    def turns(self, session: str) -> list[tuple[str, str]]:
        r = httpx.get(f"{self.api_url}/v1/namespaces/{NS}/sessions/{session}", timeout=10)
        if r.status_code == 404:
            return []
        return [(t["role"], t["content"]) for t in r.json()["turns"]]

    # the gate of GatedChatModel

    def started(self) -> list[int]:
        """Pids of the workers that entered a gated task, in order."""
        files = sorted(self.gate.glob("started-*"), key=lambda p: p.stat().st_mtime_ns)
        return [int(f.read_text()) for f in files]

    def release(self) -> None:
        (self.gate / "release").touch()


@pytest.fixture
def stack(tmp_path: Path, corpus: Path, plugins: Path) -> Iterator[Stack]:
    queue = f"test.worker.{uuid.uuid4().hex[:12]}"
    prefix = f"test-{uuid.uuid4().hex}"
    gate = tmp_path / "gate"
    gate.mkdir()
    path = os.pathsep.join(p for p in (str(plugins), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "RAGTIDE_DATA_DIR": str(corpus),
        "RAGTIDE_EMBEDDER__USE": "hashing",
        "RAGTIDE_LOGGING__LEVEL": "INFO",
        "RAGTIDE_ANSWER_CACHE_ENABLED": "false",
        "RAGTIDE_RABBITMQ__URL": AMQP,
        "RAGTIDE_RABBITMQ__QUEUE": queue,
        # The test's callback receiver is on loopback over http: allowed on purpose here.
        "RAGTIDE_WEBHOOKS__ALLOW_HTTP": "true",
        "RAGTIDE_WEBHOOKS__ALLOW_HOSTS": '["127.0.0.1"]',
        "RAGTIDE_RABBITMQ__RETRY_DELAY_S": "0.05",
        "RAGTIDE_RESULT_STORE__USE": "redis",
        "RAGTIDE_RESULT_STORE__CONFIG__URL": REDIS,
        "RAGTIDE_RESULT_STORE__CONFIG__KEY_PREFIX": prefix,
        "RAGTIDE_MEMORY__USE": "redis",
        "RAGTIDE_MEMORY__CONFIG__URL": REDIS,
        "RAGTIDE_MEMORY__CONFIG__KEY_PREFIX": prefix,
    }
    s = Stack(tmp_path, env, queue, prefix, gate)
    yield s
    s.close()


# --- the broker, seen from the test --------------------------------------------------


def _amqp(work: Callable[[aio_pika.abc.AbstractChannel], Any]) -> Any:
    async def main() -> Any:
        connection = await aio_pika.connect(AMQP)
        try:
            return await work(await connection.channel())
        finally:
            await connection.close()

    return asyncio.run(main())


def _delete_queues(queue: str) -> Callable[[aio_pika.abc.AbstractChannel], Any]:
    async def work(channel: aio_pika.abc.AbstractChannel) -> None:
        for name in (queue, dead_letter_queue(queue)):
            await channel.queue_delete(name)

    return work


def depth(queue: str) -> int:
    async def work(channel: aio_pika.abc.AbstractChannel) -> int:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)

    return int(_amqp(work))


def dead_letters(queue: str) -> list[tuple[str | None, str | None]]:
    """(message id, dead-letter reason) of every message in the dead-letter queue."""

    async def work(channel: aio_pika.abc.AbstractChannel) -> list[tuple[str | None, str | None]]:
        dead = await channel.declare_queue(dead_letter_queue(queue), passive=True)
        out = []
        while (message := await dead.get(fail=False, timeout=5)) is not None:
            reason = (message.headers or {}).get("x-first-death-reason")
            out.append((message.message_id, reason if isinstance(reason, str) else None))
        return out

    return list(_amqp(work))


def publish_raw(queue: str, body: bytes, message_id: str) -> None:
    async def work(channel: aio_pika.abc.AbstractChannel) -> None:
        message = aio_pika.Message(
            body,
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={NAMESPACE_HEADER: NS},
        )
        await channel.default_exchange.publish(message, routing_key=queue)

    _amqp(work)


class Callbacks:
    """A small HTTP server recording the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                received.append(orjson.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def callbacks() -> Iterator[Callbacks]:
    c = Callbacks()
    yield c
    c.close()


def uncited(text: str) -> str:
    """The model's words: grounding may attach a ``[n]`` to a sentence a hit supports,
    which is the chat flow's business, not the worker's."""
    return re.sub(r"\s*\[\d+\]", "", text)


def said(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(role, uncited(content)) for role, content in turns]


# --- the tests -----------------------------------------------------------------------


def test_a_worker_killed_mid_task_is_replaced_and_the_turn_saved_once(stack: Stack) -> None:
    stack.start_api()
    workers = stack.start_workers(2, gated=True)
    question = "[gate] How does Ragtide scale?"
    task_id = stack.submit(question, "s-kill")

    first = until(stack.started, "a worker to start the task")[0]
    assert stack.task(task_id)["status"] == "running"
    (victim,) = [w for w in workers if w.proc.pid == first]
    (survivor,) = [w for w in workers if w is not victim]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()

    pids = until(lambda: stack.started() if len(stack.started()) == 2 else None, "redelivery")
    assert pids == [victim.proc.pid, survivor.proc.pid]
    stack.release()
    record = stack.finished(task_id)

    answer = f"answer to: {question}"
    assert record["attempts"] == 2 and record["error"] is None
    result = record["result"]
    assert uncited(result["answer"]) == answer and result["session_id"] == "s-kill"
    assert stack.turns("s-kill") == [("user", question), ("assistant", result["answer"])]
    assert depth(stack.queue) == 0 and dead_letters(stack.queue) == []
    survivor.counted(1, "ragtide_task_redeliveries_total", kind="chat")
    survivor.counted(1, "ragtide_tasks_total", kind="chat", outcome="done")


def test_poison_messages_are_dead_lettered_and_others_unaffected(
    stack: Stack, callbacks: Callbacks
) -> None:
    stack.start_api()
    (worker,) = stack.start_workers(1, gated=True)
    poison = stack.submit("[fail] this never works", "s-poison", callback_url=callbacks.url)
    healthy = stack.submit("What is Ragtide?", "s-ok", callback_url=callbacks.url)
    raw_id = f"raw-{uuid.uuid4().hex[:8]}"
    publish_raw(stack.queue, b"\x00 not a task", raw_id)

    failed = stack.finished(poison, "failed")
    assert failed["attempts"] == 3 and failed["error"]["code"] == "upstream_error"
    assert failed["result"] is None
    undecodable = stack.finished(raw_id, "failed")
    assert undecodable["attempts"] == 1 and undecodable["error"]["code"] == "invalid_request"
    done = stack.finished(healthy)
    assert uncited(done["result"]["answer"]) == "answer to: What is Ragtide?"
    assert stack.turns("s-ok") == [
        ("user", "What is Ragtide?"),
        ("assistant", done["result"]["answer"]),
    ]
    assert stack.turns("s-poison") == []

    def two_dead() -> list[tuple[str | None, str | None]] | None:
        found = dead_letters(stack.queue)
        return found if len(found) == 2 else None

    dead = until(two_dead, "two dead letters")
    assert sorted(dead, key=str) == sorted([(poison, "rejected"), (raw_id, "rejected")], key=str)
    assert depth(stack.queue) == 0
    worker.counted(1, "ragtide_tasks_dead_lettered_total", kind="chat", reason="failed")
    worker.counted(1, "ragtide_tasks_dead_lettered_total", kind="unknown", reason="undecodable")
    worker.counted(2, "ragtide_tasks_total", kind="chat", outcome="retry")
    worker.counted(2, "ragtide_task_redeliveries_total", kind="chat")

    until(lambda: len(callbacks.received) == 2, "both callbacks")
    by_task = {c["task_id"]: c for c in callbacks.received}
    assert by_task[poison]["status"] == "failed" and by_task[healthy]["status"] == "done"
    assert by_task[healthy]["result"]["answer"] == done["result"]["answer"]


def test_a_thousand_tasks_on_three_workers_are_answered_exactly_once(stack: Stack) -> None:
    stack.start_api()
    workers = stack.start_workers(3)
    sessions, per_session = 200, 5
    questions = {
        f"s{i:03d}": [
            f"How does Ragtide scale, question {j} of session {i}?" for j in range(per_session)
        ]
        for i in range(sessions)
    }

    async def submit_all() -> list[str]:
        limit = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as client:

            async def one(session: str, message: str) -> str:
                async with limit:
                    body = {"kind": "chat", "message": message, "session_id": session}
                    r = await client.post(f"/v1/namespaces/{NS}/tasks", json=body)
                    assert r.status_code == 202, r.text
                    task_id: str = r.json()["task_id"]
                    return task_id

            return await asyncio.gather(*(one(s, q) for s, qs in questions.items() for q in qs))

    task_ids = asyncio.run(submit_all())
    assert len(set(task_ids)) == 1000

    store = redis.Redis.from_url(REDIS, decode_responses=True)
    task_keys = [f"{stack.prefix}:t:default/{NS}:{t}" for t in task_ids]  # store keys

    def records() -> list[dict[str, Any]] | None:
        raw = store.mget(task_keys)
        found = [orjson.loads(r) for r in raw if r is not None]
        return found if all(r["status"] == "done" for r in found) and len(found) == 1000 else None

    try:
        done = until(records, "1000 tasks done", timeout=90)
        assert len({r["task_id"] for r in done}) == 1000
        assert all(r["result"]["answer"] and r["attempts"] == 1 for r in done)
        assert all(r["result"]["session_id"] == r["session_id"] for r in done)
        for session, asked in questions.items():
            key = f"{stack.prefix}:s:default/{NS}:{session}"
            turns = [orjson.loads(t) for t in store.lrange(key, 0, -1)]
            users = [t["content"] for t in turns if t["role"] == "user"]
            assert len(turns) == 2 * per_session and sorted(users) == sorted(asked), session
    finally:
        store.close()

    def handled() -> list[float] | None:
        counts = [w.metric("ragtide_tasks_total", kind="chat", outcome="done") for w in workers]
        return counts if sum(counts) == 1000 else None

    assert all(n > 0 for n in until(handled, "1000 acks counted")), "a worker took no task"
    assert (
        sum(w.metric("ragtide_tasks_total", kind="chat", outcome="duplicate") for w in workers) == 0
    )
    assert depth(stack.queue) == 0 and dead_letters(stack.queue) == []
    # Each worker's event loop is watched: its lag measured ten times a second
    assert all(w.metric("ragtide_event_loop_lag_seconds_count") > 0 for w in workers)


def test_sigterm_finishes_the_task_in_flight_and_exits_zero(stack: Stack) -> None:
    stack.start_api()
    (worker,) = stack.start_workers(1, gated=True)
    task_id = stack.submit("[gate] drain me", "s-drain")
    until(stack.started, "the task to start")
    worker.proc.send_signal(signal.SIGTERM)

    def draining() -> bool:
        r = httpx.get(f"{worker.url}/ready", timeout=5)
        return r.status_code == 503 and r.json()["reason"] == "draining"

    until(draining, "/ready to say draining")
    assert httpx.get(f"{worker.url}/healthz", timeout=5).status_code == 200
    assert worker.proc.poll() is None  # still finishing the task
    later = stack.submit("submitted while draining", "s-later")
    stack.release()
    assert worker.proc.wait(timeout=30) == 0, worker.tail()
    record = stack.finished(task_id)
    assert record["attempts"] == 1
    assert said(stack.turns("s-drain")) == [
        ("user", "[gate] drain me"),
        ("assistant", "answer to: [gate] drain me"),
    ]
    assert '"msg":"ragtide worker stopped"' in worker.log.read_text()

    stack.start_workers(1, gated=True)  # nothing submitted meanwhile is lost
    later_answer = stack.finished(later)["result"]["answer"]
    assert uncited(later_answer) == "answer to: submitted while draining"
    assert len(stack.turns("s-later")) == 2


def test_a_task_unfinished_after_the_grace_period_goes_back_to_the_queue(stack: Stack) -> None:
    stack.start_api()
    (worker,) = stack.start_workers(1, gated=True, RAGTIDE_WORKER__GRACE_SECONDS="0.5")
    task_id = stack.submit("[gate] too slow", "s-slow")
    until(stack.started, "the task to start")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=30) == 0, worker.tail()
    assert stack.task(task_id)["status"] == "running"
    until(lambda: depth(stack.queue) == 1, "the message back in the queue")

    (replacement,) = stack.start_workers(1, gated=True)
    until(lambda: len(stack.started()) == 2, "the replacement to start it")
    stack.release()
    record = stack.finished(task_id)
    assert record["attempts"] == 2
    assert said(stack.turns("s-slow")) == [
        ("user", "[gate] too slow"),
        ("assistant", "answer to: [gate] too slow"),
    ]
    replacement.counted(1, "ragtide_task_redeliveries_total", kind="chat")


def close_connection(name: str) -> bool:
    """Make RabbitMQ close the connection called ``name`` (as a broker restart would)."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in listed.splitlines():
        pid, _, properties = line.partition("\t")
        if f'{{"connection_name","{name}"}}' in properties:
            subprocess.run(
                ["rabbitmqctl", "close_connection", pid, "test"], check=True, capture_output=True
            )
            return True
    return False


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
def test_a_lost_connection_is_reopened_and_the_task_answered_once(stack: Stack) -> None:
    stack.start_api()
    (worker,) = stack.start_workers(1, gated=True)
    task_id = stack.submit("[gate] survive a lost connection", "s-conn")
    until(stack.started, "the task to start")
    assert close_connection(f"ragtide-worker {socket.gethostname()}:{worker.proc.pid}")

    # The worker reconnects and gets the task again while the first run still waits.
    until(lambda: len(stack.started()) == 2, "the task redelivered on the new connection")
    stack.release()
    record = stack.finished(task_id)
    assert record["attempts"] == 2
    assert said(stack.turns("s-conn")) == [
        ("user", "[gate] survive a lost connection"),
        ("assistant", "answer to: [gate] survive a lost connection"),
    ]
    worker.counted(1, "ragtide_tasks_total", kind="chat", outcome="abandoned")
    worker.counted(1, "ragtide_tasks_total", kind="chat", outcome="done")
    until(lambda: httpx.get(f"{worker.url}/ready", timeout=5).status_code == 200, "ready again")
    assert depth(stack.queue) == 0 and worker.proc.poll() is None
