"""TaskRunner: one delivery at a time, with a worker "killed" between any two steps.

The runtime is the real one (SQLite in a temporary directory, the hashing embedder, the
extractive answerer, in-process memory); the result store is the in-memory one, wrapped
to raise ``Killed`` (a ``BaseException``, like the end of a process) at a chosen write.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ragtide import chat
from ragtide.api.schemas import render_answer
from ragtide.builtin.task_results import InMemoryResultStore
from ragtide.components import ChatModel
from ragtide.errors import BackendUnavailable
from ragtide.ingest.pipeline import Ingestor
from ragtide.runtime import Runtime, build_runtime
from ragtide.settings import Settings
from ragtide.types import ChatTurn, Prompt, Reply
from ragtide.worker.execute import Delivery, TaskRunner, Verdict, apply_turns
from ragtide.worker.tasks import TaskMessage, fingerprint, new_record, parse_request

pytestmark = pytest.mark.anyio

NS = "default/kb"  # a store key, as the API submits it
PODS = b"""# Pods

A Pod is the smallest deployable unit of computing that you can create and manage in
Kubernetes. A Pod runs one or more containers that share storage and network resources.
"""


class Killed(BaseException):
    """The worker process ended here."""


class CountingModel:
    """Delegates to a real chat model; counts calls; raises what ``plan`` says, in turn."""

    def __init__(self, inner: ChatModel, plan: list[BaseException | None] | None = None) -> None:
        self._inner = inner
        self._plan = list(plan or [])
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    async def generate(self, prompt: Prompt) -> Reply:
        self.calls += 1
        step = self._plan.pop(0) if self._plan else None
        if step is not None:
            raise step
        return await self._inner.generate(prompt)

    def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        return self._inner.stream(prompt)


class KillingResults(InMemoryResultStore):
    """Raises ``Killed`` once, at the first ``put`` whose record matches ``when``."""

    def __init__(self, when: Callable[[dict[str, Any]], bool], *, after_write: bool) -> None:
        super().__init__()
        self._when = when
        self._after_write = after_write
        self.armed = True

    async def put(self, namespace: str, task_id: str, record: Any) -> None:
        hit = self.armed and self._when(dict(record))
        if hit and not self._after_write:
            self.armed = False
            raise Killed
        await super().put(namespace, task_id, record)
        if hit:
            self.armed = False
            raise Killed


class DownResults(InMemoryResultStore):
    async def get(self, namespace: str, task_id: str) -> dict[str, Any] | None:
        raise BackendUnavailable("redis get task failed: ConnectionError")


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path,
        embedder={"use": "hashing"},
        answer_cache_enabled=False,
        logging={"format": "console", "access_log": False},
    )
    runtime = build_runtime(settings)
    await runtime.start()
    await Ingestor(runtime).ingest_bytes(NS, "pods.md", PODS)
    runtime.chat_model = CountingModel(runtime.chat_model)
    yield runtime
    await runtime.aclose()


def model(rt: Runtime) -> CountingModel:
    assert isinstance(rt.chat_model, CountingModel)
    return rt.chat_model


async def submit(results: InMemoryResultStore, namespace: str = NS, **request: Any) -> TaskMessage:
    fields = {"kind": "chat", **request}
    if fields["kind"] == "chat":
        fields = {"message": "What is a Pod?", "session_id": "s1", **fields}
    parsed = parse_request(json.dumps(fields).encode())
    message = TaskMessage(task_id=uuid.uuid4().hex, namespace=namespace, request=parsed)
    assert await results.create(
        namespace, message.task_id, new_record(message, fingerprint(parsed))
    )
    return message


def delivery(message: TaskMessage, attempt: int = 1) -> Delivery:
    return Delivery(message.encode(), attempt, message.task_id, message.namespace)


async def turns(rt: Runtime, session: str = "s1") -> list[tuple[str, str]]:
    return [(t.role, t.content) for t in await rt.memory.load(NS, session, 1000)]


# --- the ordinary path ---------------------------------------------------------------


async def test_a_chat_task_is_answered_like_the_api_and_saved_once(rt: Runtime) -> None:
    results = InMemoryResultStore()
    message = await submit(results)
    outcome = await TaskRunner(rt, results, max_attempts=3).handle(delivery(message))
    assert (outcome.verdict, outcome.kind, outcome.outcome) == (Verdict.ACK, "chat", "done")
    record = await results.get(NS, message.task_id)
    assert record is not None and record["status"] == "done" and record["attempts"] == 1
    assert "commit" not in record and record["error"] is None
    assert outcome.record == record

    api = render_answer(await chat.answer(rt, NS, "What is a Pod?", "s2"))
    assert record["result"] == {**api, "session_id": "s1"}  # the API's answer, word for word
    assert "Pod" in record["result"]["answer"] and record["result"]["citations"]
    assert await turns(rt) == [("user", "What is a Pod?"), ("assistant", api["answer"])]


async def test_a_finished_task_delivered_again_is_only_acked(rt: Runtime) -> None:
    results = InMemoryResultStore()
    message = await submit(results)
    runner = TaskRunner(rt, results, max_attempts=3)
    await runner.handle(delivery(message))
    again = await runner.handle(delivery(message, attempt=2))
    assert (again.verdict, again.outcome) == (Verdict.ACK, "duplicate")
    assert model(rt).calls == 1 and len(await turns(rt)) == 2


async def test_an_ingest_task_writes_each_document_once(rt: Runtime) -> None:
    results = InMemoryResultStore()
    docs = [{"id": "bread", "title": "Bread", "text": "Bread is baked from flour and yeast."}]
    message = await submit(results, kind="ingest", documents=docs)
    runner = TaskRunner(rt, results, max_attempts=3)
    outcome = await runner.handle(delivery(message))
    assert outcome.outcome == "done" and outcome.record is not None
    result = outcome.record["result"]
    assert [(d["document_id"], d["status"]) for d in result["documents"]] == [("bread", "created")]
    # The same job again (a redelivery after a crash before the ack): nothing changes.
    await results.put(NS, message.task_id, {**outcome.record, "status": "running"})
    again = await runner.handle(delivery(message, attempt=2))
    assert again.record is not None
    assert [d["status"] for d in again.record["result"]["documents"]] == ["unchanged"]
    assert sorted(d.id for d in await rt.store.list_documents(NS)) == ["bread", "pods.md"]


# --- killed between steps ------------------------------------------------------------


async def test_killed_while_answering_answers_afresh_once(rt: Runtime) -> None:
    rt.chat_model = CountingModel(model(rt), plan=[Killed()])
    results = InMemoryResultStore()
    message = await submit(results)
    runner = TaskRunner(rt, results, max_attempts=3)
    with pytest.raises(Killed):
        await runner.handle(delivery(message))
    record = await results.get(NS, message.task_id)
    assert record is not None and record["status"] == "running" and "commit" not in record
    assert await turns(rt) == []  # nothing visible before the commit
    outcome = await runner.handle(delivery(message, attempt=2))
    assert outcome.outcome == "done" and outcome.record is not None
    assert outcome.record["attempts"] == 2
    assert len(await turns(rt)) == 2


@pytest.mark.parametrize(
    ("when", "after_write", "turns_before_redelivery"),
    [
        (lambda r: "commit" in r, True, 0),  # answer committed, turns not yet applied
        (lambda r: r.get("status") == "done", False, 2),  # turns applied, "done" not written
    ],
    ids=["after-commit", "after-apply"],
)
async def test_killed_after_committing_never_answers_or_saves_twice(
    rt: Runtime,
    when: Callable[[dict[str, Any]], bool],
    after_write: bool,
    turns_before_redelivery: int,
) -> None:
    results = KillingResults(when, after_write=after_write)
    message = await submit(results)
    runner = TaskRunner(rt, results, max_attempts=3)
    with pytest.raises(Killed):
        await runner.handle(delivery(message))
    assert len(await turns(rt)) == turns_before_redelivery
    committed = await results.get(NS, message.task_id)
    assert committed is not None and committed["commit"]["result"]["answer"]

    outcome = await runner.handle(delivery(message, attempt=2))
    assert outcome.outcome == "done" and outcome.record is not None
    assert outcome.record["result"] == committed["commit"]["result"]
    assert model(rt).calls == 1  # the redelivery did not answer again
    assert await turns(rt) == [
        ("user", "What is a Pod?"),
        ("assistant", committed["commit"]["result"]["answer"]),
    ]


async def test_a_commit_is_finished_even_past_max_attempts(rt: Runtime) -> None:
    results = KillingResults(lambda r: "commit" in r, after_write=True)
    message = await submit(results)
    runner = TaskRunner(rt, results, max_attempts=1)
    with pytest.raises(Killed):
        await runner.handle(delivery(message))
    outcome = await runner.handle(delivery(message, attempt=2))
    assert outcome.outcome == "done" and len(await turns(rt)) == 2


async def test_applying_a_commit_twice_appends_once(rt: Runtime) -> None:
    appends = [
        {
            "namespace": NS,
            "session_id": "s9",
            "turns": [
                {"role": "user", "content": "q", "at": 1.5},
                {"role": "assistant", "content": "a", "at": 1.75},
            ],
        }
    ]
    await rt.memory.append(NS, "s9", ChatTurn("user", "q", 1.0))  # same text, other turn
    await apply_turns(rt.memory, appends, check=True)
    await apply_turns(rt.memory, appends, check=True)
    held = await rt.memory.load(NS, "s9", 100)
    assert [(t.content, t.at) for t in held] == [("q", 1.0), ("q", 1.5), ("a", 1.75)]


# --- failures ------------------------------------------------------------------------


async def test_a_failing_task_is_retried_then_dead_lettered_with_its_reason(rt: Runtime) -> None:
    rt.chat_model = CountingModel(model(rt), plan=[RuntimeError("boom")] * 5)
    results = InMemoryResultStore()
    message = await submit(results)
    runner = TaskRunner(rt, results, max_attempts=3)
    for attempt in (1, 2):
        outcome = await runner.handle(delivery(message, attempt))
        assert (outcome.verdict, outcome.outcome) == (Verdict.REQUEUE, "retry")
        record = await results.get(NS, message.task_id)
        assert record is not None and record["status"] == "queued"
        assert record["attempts"] == attempt and record["error"]["code"] == "internal"
    outcome = await runner.handle(delivery(message, 3))
    assert (outcome.verdict, outcome.outcome, outcome.reason) == (Verdict.DEAD, "failed", "failed")
    record = await results.get(NS, message.task_id)
    assert record is not None and record["status"] == "failed" and record["attempts"] == 3
    assert record["error"] == {"code": "internal", "message": "internal error (RuntimeError)"}
    assert model(rt).calls == 3 and await turns(rt) == []


async def test_a_transient_failure_then_success(rt: Runtime) -> None:
    rt.chat_model = CountingModel(model(rt), plan=[RuntimeError("once")])
    results = InMemoryResultStore()
    message = await submit(results)
    runner = TaskRunner(rt, results, max_attempts=3)
    assert (await runner.handle(delivery(message, 1))).verdict is Verdict.REQUEUE
    outcome = await runner.handle(delivery(message, 2))
    assert outcome.outcome == "done" and outcome.record is not None
    assert outcome.record["error"] is None and len(await turns(rt)) == 2


async def test_an_unknown_namespace_fails_at_once(rt: Runtime) -> None:
    results = InMemoryResultStore()
    message = await submit(results, namespace="default/gone")
    outcome = await TaskRunner(rt, results, max_attempts=3).handle(delivery(message))
    assert (outcome.verdict, outcome.outcome) == (Verdict.DEAD, "failed")
    record = await results.get("default/gone", message.task_id)
    assert record is not None and record["error"]["code"] == "namespace_not_found"
    assert record["attempts"] == 1


async def test_past_max_attempts_a_task_fails_without_running(rt: Runtime) -> None:
    results = InMemoryResultStore()
    message = await submit(results)
    outcome = await TaskRunner(rt, results, max_attempts=3).handle(delivery(message, attempt=4))
    assert (outcome.verdict, outcome.reason) == (Verdict.DEAD, "attempts")
    record = await results.get(NS, message.task_id)
    assert record is not None and record["error"]["code"] == "attempts_exhausted"
    assert record["attempts"] == 3 and model(rt).calls == 0


async def test_a_message_without_record_is_not_answered(rt: Runtime) -> None:
    results = InMemoryResultStore()
    message = await submit(results)
    await results.delete(NS, message.task_id)  # the API withdrew it
    outcome = await TaskRunner(rt, results, max_attempts=3).handle(delivery(message))
    assert (outcome.verdict, outcome.outcome) == (Verdict.DEAD, "orphaned")
    assert model(rt).calls == 0 and await results.get(NS, message.task_id) is None


async def test_an_undecodable_body_is_recorded_as_failed_when_its_task_is_known(
    rt: Runtime,
) -> None:
    results = InMemoryResultStore()
    runner = TaskRunner(rt, results, max_attempts=3)
    outcome = await runner.handle(Delivery(b"\x00garbage", 1, "t-1", NS))
    assert (outcome.verdict, outcome.kind, outcome.reason) == (
        Verdict.DEAD,
        "unknown",
        "undecodable",
    )
    record = await results.get(NS, "t-1")
    assert record is not None and record["status"] == "failed"
    assert record["error"]["code"] == "invalid_request"
    anonymous = await runner.handle(Delivery(b"{}", 1, None, None))
    assert anonymous.verdict is Verdict.DEAD and anonymous.record is None
    bad_namespace = await runner.handle(Delivery(b"{}", 1, "t-2", "../x"))
    assert bad_namespace.verdict is Verdict.DEAD and await results.get("../x", "t-2") is None


async def test_a_store_outage_is_raised_to_hold_the_delivery(rt: Runtime) -> None:
    results = DownResults()
    message = await submit(results)
    with pytest.raises(BackendUnavailable):
        await TaskRunner(rt, results, max_attempts=3).handle(delivery(message))
    assert model(rt).calls == 0


async def test_a_worker_that_lost_its_channel_commits_nothing(rt: Runtime) -> None:
    results = InMemoryResultStore()
    message = await submit(results)
    outcome = await TaskRunner(rt, results, max_attempts=3).handle(
        delivery(message), still_ours=lambda: False
    )
    assert (outcome.verdict, outcome.outcome) == (Verdict.ABANDON, "abandoned")
    record = await results.get(NS, message.task_id)
    assert record is not None and record["status"] == "running" and "commit" not in record
    assert await turns(rt) == []
