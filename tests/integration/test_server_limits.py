"""The real server process under abuse: slow clients, idle connections, too many requests.

Each test spawns ``ragtide serve`` with small limits and waits on observable state (a
socket's end of file, a metric, a status), never on time: no assertion is about how long
anything took.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragtide.bench.server import free_port, wait_ready
from tests.polling import until

pytestmark = pytest.mark.integration


class Server:
    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.log = tmp_path / "server.log"
        environ = {
            **os.environ,
            "RAGTIDE_DATA_DIR": str(tmp_path / "data"),
            "RAGTIDE_LOGGING__LEVEL": "WARNING",
            **env,
        }
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(self.port)],
                env=environ,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            wait_ready(self.proc, self.port, time.perf_counter(), timeout=60)
        except (RuntimeError, TimeoutError) as exc:
            self.close()
            raise AssertionError(f"server not ready: {exc}\n{self.log.read_text()}") from exc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def healthy(self) -> bool:
        return httpx.get(f"{self.url}/healthz", timeout=10).status_code == 200

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


Spawn = Callable[..., Server]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start ``ragtide serve`` with these environment variables; killed after the test."""
    servers: list[Server] = []

    def start(**env: str) -> Server:
        server = Server(tmp_path, **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as EOF)."""
    sock.settimeout(60)  # a hang guard, not a timing assertion
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length, leaving the connection open."""
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def assert_overloaded(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "overloaded"


# --- header timeout ---------------------------------------------------------------------------


def test_slow_clients_trickling_headers_are_all_disconnected(spawn: Spawn) -> None:
    server = spawn(RAGTIDE_HTTP__HEADER_TIMEOUT_S="1")
    clients = []
    for _ in range(200):
        sock = server.connect()
        sock.sendall(b"GET /v1/namespaces HTTP/1.1\r\nHost: x\r\n")
        sock.setblocking(False)
        clients.append(sock)
    received: dict[socket.socket, bytes] = {sock: b"" for sock in clients}
    open_ = set(clients)
    health_checks = 0

    def trickle_until_all_closed() -> bool:
        nonlocal health_checks
        for sock in list(open_):
            try:  # one more header byte: never the blank line that ends the head
                sock.send(b"a")
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
        readable, _, _ = select.select(list(open_), [], [], 0)
        for sock in readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except BlockingIOError:
                continue
            received[sock] += chunk
            if not chunk:
                open_.discard(sock)
        assert server.healthy()  # the slow clients never starve the probes
        health_checks += 1
        return not open_

    try:
        until(trickle_until_all_closed, "every slow client disconnected", timeout=60, interval=0.05)
    finally:
        for sock in clients:
            sock.close()
    assert health_checks > 0
    # They had started a request: each was told why before the connection was closed.
    for data in received.values():
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert b'"code":"request_timeout"' in data
    assert server.metric("ragtide_http_connections_closed_total", reason="header") >= 200
    assert server.healthy()


def test_a_connection_that_sends_nothing_is_closed(spawn: Spawn) -> None:
    server = spawn(RAGTIDE_HTTP__HEADER_TIMEOUT_S="1", RAGTIDE_HTTP__KEEP_ALIVE_S="60")
    with server.connect() as sock:
        assert read_to_eof(sock) == b""  # no request started: closed without a word


def test_a_request_after_the_timeout_window_is_still_served(spawn: Spawn) -> None:
    """The clock is per request head: a keep-alive connection that sends a whole request
    later, within its keep-alive time, is not cut off by an earlier head's deadline."""
    server = spawn(RAGTIDE_HTTP__HEADER_TIMEOUT_S="1", RAGTIDE_HTTP__KEEP_ALIVE_S="60")
    with server.connect() as sock:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request)
        assert read_response(sock)[0] == 200
        before = server.metric("ragtide_http_connections_closed_total", reason="header")
        # Another connection's head times out meanwhile (observable), this one is idle.
        with server.connect() as other:
            other.sendall(b"GET / HTTP/1.1\r\n")
            assert read_to_eof(other).startswith(b"HTTP/1.1 408 ")
        until(
            lambda: (
                server.metric("ragtide_http_connections_closed_total", reason="header") > before
            ),
            "the other connection's header timeout counted",
        )
        sock.sendall(request)
        assert read_response(sock)[0] == 200


# --- keep-alive -------------------------------------------------------------------------------


def test_an_idle_keep_alive_connection_is_closed(spawn: Spawn) -> None:
    server = spawn(RAGTIDE_HTTP__KEEP_ALIVE_S="1", RAGTIDE_HTTP__HEADER_TIMEOUT_S="60")
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection") != "close"
        assert read_to_eof(sock) == b""  # closed by the server, not by us
    assert server.metric("ragtide_http_connections_closed_total", reason="keep_alive") >= 1


# --- in-flight cap ----------------------------------------------------------------------------


def test_past_max_in_flight_requests_are_refused_with_retry_after(spawn: Spawn) -> None:
    server = spawn(RAGTIDE_HTTP__MAX_IN_FLIGHT="3", RAGTIDE_HTTP__HEADER_TIMEOUT_S="60")
    body = orjson.dumps({"query": "held"})
    head = (
        b"POST /v1/namespaces/kb/search HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    held = []
    try:
        # Three requests in flight: their heads are in, their bodies are not (yet).
        for _ in range(3):
            sock = server.connect()
            sock.sendall(head)
            held.append(sock)
        until(
            lambda: server.metric("ragtide_http_requests_in_flight") == 3,
            "three requests in flight",
        )
        assert_overloaded(httpx.get(f"{server.url}/v1/namespaces", timeout=10))
        assert_overloaded(
            httpx.post(f"{server.url}/v1/namespaces/kb/search", json={"query": "q"}, timeout=10)
        )
        # Probes and scrapes are never refused.
        assert server.healthy()
        assert httpx.get(f"{server.url}/ready", timeout=10).status_code == 200
        assert server.metric("ragtide_http_overloaded_total", limit="in_flight") == 2
        # The held requests finish normally; then there is room again.
        for sock in held:
            sock.sendall(body)
            assert read_response(sock)[0] != 503
    finally:
        for sock in held:
            sock.close()
    until(
        lambda: httpx.get(f"{server.url}/v1/namespaces", timeout=10).status_code == 200,
        "requests admitted again",
    )


# --- connection cap ---------------------------------------------------------------------------


def test_past_max_connections_requests_are_refused(spawn: Spawn) -> None:
    server = spawn(RAGTIDE_HTTP__MAX_CONNECTIONS="20", RAGTIDE_HTTP__HEADER_TIMEOUT_S="120")
    idle = [server.connect() for _ in range(20)]
    try:

        def refused_request() -> httpx.Response | None:
            response = httpx.get(f"{server.url}/v1/namespaces", timeout=10)
            return response if response.status_code == 503 else None

        refused = until(refused_request, "a request past 20 open connections is refused")
        assert refused is not None
        assert_overloaded(refused)
        assert refused.headers["connection"] == "close"
        assert server.healthy()  # probes are answered past the cap
        assert server.metric("ragtide_http_overloaded_total", limit="connections") >= 1
    finally:
        for sock in idle:
            sock.close()
    until(
        lambda: httpx.get(f"{server.url}/v1/namespaces", timeout=10).status_code == 200,
        "requests served again once the connections are gone",
    )
