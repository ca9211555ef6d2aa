"""Streamed chat turns whose client goes away, on a real ``ragtide serve`` process.

The chat model is the built-in ``openai`` one, pointed at ``SlowLLM``: an
OpenAI-compatible server on 127.0.0.1 that streams a few tokens at once, then holds the
rest back until the test releases them, and records when its client (Ragtide) drops the
connection. A test starts a stream, reads those first tokens, closes its connection and
then waits (polling, never sleeping) for the observable consequences: the upstream
request is dropped, the abandoned-stream metric goes up, the session has no new turn,
nothing was cached. A stream read to the end saves, caches and counts its turn.
"""

from __future__ import annotations

import json
import os
import select
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragtide.bench.server import free_port, wait_ready
from tests.polling import until

pytestmark = pytest.mark.integration

NS = "kb"
FIRST = ["Pods ", "run ", "containers "]  # sent at once
REST = ["on ", "nodes ", "[1]."]  # sent once released
ANSWER = "".join(FIRST + REST)


# --- the slow upstream ---------------------------------------------------------------


def _chunk(content: str) -> bytes:
    choice = {"index": 0, "delta": {"content": content}}
    body = {"object": "chat.completion.chunk", "choices": [choice]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class SlowLLM:
    """A streaming ``/v1/chat/completions`` that waits for ``release`` mid-answer.

    Every request gets the ``FIRST`` tokens at once; then the handler waits until either
    ``release`` is set (it sends ``REST`` and ``[DONE]``) or the client closes the
    connection (recorded in ``disconnected``). ``questions`` holds each request's last
    user message, ``finished`` the ones answered to the end.
    """

    def __init__(self) -> None:
        self.release = threading.Event()
        self.questions: list[str] = []
        self.disconnected: list[str] = []
        self.finished: list[str] = []
        self.stopping = threading.Event()
        llm = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.rfile.readline()  # the request line
                length = 0
                while line := self.rfile.readline().strip():
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = json.loads(self.rfile.read(length))
                question = body["messages"][-1]["content"]
                llm.questions.append(question)
                head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                self.wfile.write(head + b"connection: close\r\n\r\n")
                self.wfile.write(b"".join(_chunk(t) for t in FIRST))
                if not llm.hold(self.connection):
                    llm.disconnected.append(question)
                    return
                usage = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 6}}
                tail = b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n"
                self.wfile.write(b"".join(_chunk(t) for t in REST) + tail)
                llm.finished.append(question)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hold(self, conn: socket.socket) -> bool:
        """Wait for ``release`` (True) or for the client to hang up (False)."""
        while not self.release.is_set() and not self.stopping.is_set():
            readable, _, _ = select.select([conn], [], [], 0.01)
            if readable:
                try:
                    if not conn.recv(1):  # EOF: the client closed its end
                        return False
                except OSError:  # reset
                    return False
        return not self.stopping.is_set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


# --- the Ragtide server --------------------------------------------------------------


@dataclass
class Api:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` that carry ``labels`` (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(
            float(sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def turns(self, session: str) -> list[tuple[str, str]]:
        r = httpx.get(f"{self.url}/v1/namespaces/{NS}/sessions/{session}", timeout=10)
        if r.status_code == 404:
            return []
        assert r.status_code == 200, r.text
        return [(t["role"], t["content"]) for t in r.json()["turns"]]


@pytest.fixture(scope="module")
def llm() -> Iterator[SlowLLM]:
    server = SlowLLM()
    yield server
    server.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, llm: SlowLLM) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("streams-data")
    base = {**os.environ, "RAGTIDE_DATA_DIR": str(data), "RAGTIDE_EMBEDDER__USE": "hashing"}
    subprocess.run(
        [sys.executable, "-m", "ragtide.cli", "ingest", "--demo", "-q", "-n", NS],
        env=base,
        check=True,
        capture_output=True,
    )
    env = {
        **base,
        "RAGTIDE_CHAT_MODEL__USE": "openai",
        "RAGTIDE_CHAT_MODEL__CONFIG__BASE_URL": llm.url,
        "RAGTIDE_CHAT_MODEL__CONFIG__MAX_RETRIES": "0",
        "RAGTIDE_CHAT_MODEL__CONFIG__TIMEOUT_S": "60",
        "RAGTIDE_LOGGING__LEVEL": "INFO",
    }
    port = free_port()
    log = data / "api.log"
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    server = Api(proc, port, log)
    try:
        wait_ready(proc, port, time.perf_counter(), timeout=60)
        yield server
    except (RuntimeError, TimeoutError) as exc:
        raise AssertionError(f"api not ready: {exc}\n{log.read_text(errors='replace')}") from exc
    finally:
        proc.kill()
        proc.wait()
    errors = [line for line in log.read_text(errors="replace").splitlines() if "Traceback" in line]
    assert not errors, log.read_text(errors="replace")[-4000:]


@pytest.fixture
def question(llm: SlowLLM) -> str:
    """A question of this test alone (so no other test's cached answer matches it)."""
    llm.release.clear()
    return f"How do pods run containers {uuid.uuid4().hex[:8]}?"


# --- reading the two stream formats --------------------------------------------------


def native_tokens(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event, data) of ``/v1/namespaces/{ns}/chat`` server-sent events (a token's text)."""
    event = ""
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            yield event, data["text"] if event == "token" else data


def openai_tokens(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """("token", text) | ("end", citations) | ("done", None) of ``/v1/chat/completions``."""
    for line in lines:
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            yield "done", None
            continue
        chunk = json.loads(line[6:])
        choice = chunk["choices"][0]
        if choice["finish_reason"] is not None:
            yield "end", chunk["citations"]
        elif choice["delta"].get("content"):
            yield "token", choice["delta"]["content"]


def start(api: Api, route: str, question: str, session: str) -> tuple[str, dict[str, Any]]:
    if route == "native":
        body = {"message": question, "session_id": session, "stream": True}
        return f"{api.url}/v1/namespaces/{NS}/chat", body
    body = {"model": NS, "stream": True, "messages": [{"role": "user", "content": question}]}
    return f"{api.url}/v1/chat/completions", body


def read_then_hang_up(api: Api, route: str, question: str, session: str) -> list[str]:
    """Stream a turn, read the ``FIRST`` tokens and close the connection."""
    url, body = start(api, route, question, session)
    parse = native_tokens if route == "native" else openai_tokens
    tokens: list[str] = []
    with httpx.Client(timeout=30) as client, client.stream("POST", url, json=body) as r:
        assert r.status_code == 200, r.read()
        for kind, data in parse(r.iter_lines()):
            assert kind == "token", (kind, data)
            tokens.append(data)
            if len(tokens) == len(FIRST):
                break
    return tokens  # leaving both blocks closed the socket mid-stream


def read_to_the_end(
    api: Api, llm: SlowLLM, route: str, question: str, session: str
) -> list[tuple[str, Any]]:
    """Stream a turn, releasing the upstream after the ``FIRST`` tokens; every event."""
    url, body = start(api, route, question, session)
    parse = native_tokens if route == "native" else openai_tokens
    events: list[tuple[str, Any]] = []
    with httpx.Client(timeout=30) as client, client.stream("POST", url, json=body) as r:
        assert r.status_code == 200, r.read()
        for event in parse(r.iter_lines()):
            events.append(event)
            if len(events) == len(FIRST):
                llm.release.set()
    return events


# --- tests ---------------------------------------------------------------------------

ABANDONED = "ragtide_chat_streams_abandoned_total"
TURNS = "ragtide_chat_turns_total"


@pytest.mark.parametrize("route", ["native", "openai"])
def test_a_client_that_hangs_up_mid_stream_cancels_the_turn(
    api: Api, llm: SlowLLM, question: str, route: str
) -> None:
    session = uuid.uuid4().hex
    abandoned, turns = api.metric(ABANDONED), api.metric(TURNS)

    assert read_then_hang_up(api, route, question, session) == FIRST

    until(lambda: question in llm.disconnected, "the upstream LLM request to be dropped")
    until(lambda: api.metric(ABANDONED) == abandoned + 1, "the abandoned stream to be counted")
    assert question not in llm.finished
    assert api.metric(TURNS) == turns, "an abandoned turn is not an answered one"
    assert api.turns(session) == []

    # Nothing was cached: the same question goes to the LLM again, and this time it is
    # read to the end, which saves, caches and counts the turn.
    events = read_to_the_end(api, llm, route, question, session)
    assert llm.questions.count(question) == 2
    assert [data for kind, data in events if kind == "token"][: len(FIRST)] == FIRST
    assert api.metric(TURNS) == turns + 1
    assert api.metric(ABANDONED) == abandoned + 1
    if route == "native":
        assert events[-1][0] == "done" and events[-1][1]["answer"] == ANSWER
        assert api.turns(session) == [("user", question), ("assistant", ANSWER)]
    else:
        assert [kind for kind, _ in events[-2:]] == ["end", "done"]
        assert api.turns(session) == []  # OpenAI-style turns are stateless


def test_a_stream_read_to_the_end_saves_and_caches_its_turn(
    api: Api, llm: SlowLLM, question: str
) -> None:
    session = uuid.uuid4().hex
    events = read_to_the_end(api, llm, "native", question, session)
    assert "".join(text for kind, text in events if kind == "token") == ANSWER
    kinds = [kind for kind, _ in events]
    assert kinds[-2:] == ["citations", "done"]
    assert api.turns(session) == [("user", question), ("assistant", ANSWER)]
    assert question in llm.finished

    # The answer was cached: asking again (another session) does not reach the LLM.
    other = uuid.uuid4().hex
    llm.release.clear()
    again = read_to_the_end(api, llm, "native", question, other)
    assert again[-1][0] == "done" and again[-1][1]["answer"] == ANSWER
    assert llm.questions.count(question) == 1
    assert api.turns(other) == [("user", question), ("assistant", ANSWER)]
