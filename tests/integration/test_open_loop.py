"""The bench's open-loop client against a real server with a short keep-alive timeout.

At a low rate its keep-alive connections sat idle past the server's timeout (uvicorn's
5 s): the server closed them and the next request written on one was lost. The server
here closes idle connections after 1 s, so the tests are short; they wait on the
server's own count of closed connections, never on time.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from ragtide.bench.server import ConnectionPool, _open_loop, idempotent
from tests.integration.test_server_limits import Server
from tests.polling import until

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SEARCH = "/v1/namespaces/kb/search"
CHAT = "/v1/namespaces/kb/chat"
BODY = orjson.dumps({"query": "harbour"})
CLOSED = "ragtide_http_connections_closed_total"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("open-loop"), RAGTIDE_HTTP__KEEP_ALIVE_S="1")
    try:
        assert httpx.put(f"{server.url}/v1/namespaces/kb", timeout=30).status_code in (200, 201)
        yield server
    finally:
        server.close()


def _wait_for_idle_close(server: Server) -> None:
    """Block (the event loop too, on purpose: the client cannot notice the close) until
    the server has closed one more idle keep-alive connection."""
    before = server.metric(CLOSED, reason="keep_alive")
    until(lambda: server.metric(CLOSED, reason="keep_alive") > before, "an idle connection closed")


def test_only_reads_are_idempotent() -> None:
    assert idempotent("GET", "/v1/namespaces/kb/documents")
    assert idempotent("POST", SEARCH)
    assert not idempotent("POST", CHAT)
    assert not idempotent("POST", "/v1/namespaces/kb/documents")


async def test_a_search_on_a_connection_the_server_closed_is_sent_again(server: Server) -> None:
    pool = ConnectionPool(server.port, size=1, keep_alive_s=60)  # above the server's 1 s
    try:
        assert await pool.request("POST", SEARCH, BODY) == 200
        _wait_for_idle_close(server)
        assert await pool.request("POST", SEARCH, BODY) == 200
        assert (pool.retried, pool.opened) == (1, 2)
    finally:
        await pool.aclose()


async def test_a_chat_turn_is_never_sent_twice(server: Server) -> None:
    pool = ConnectionPool(server.port, size=1, keep_alive_s=60)
    try:
        assert await pool.request("POST", SEARCH, BODY) == 200
        _wait_for_idle_close(server)
        with pytest.raises(ConnectionError):
            await pool.request("POST", CHAT, orjson.dumps({"message": "hello"}))
        assert pool.retried == 0
    finally:
        await pool.aclose()


async def test_a_connection_idle_past_the_pools_keep_alive_is_replaced_before_use(
    server: Server,
) -> None:
    pool = ConnectionPool(server.port, size=1, keep_alive_s=0.5)  # below the server's 1 s
    try:
        assert await pool.request("POST", SEARCH, BODY) == 200
        _wait_for_idle_close(server)  # so more than 1 s has passed: past the pool's 0.5 s
        assert await pool.request("POST", SEARCH, BODY) == 200
        assert (pool.expired, pool.retried, pool.opened) == (1, 0, 2)
    finally:
        await pool.aclose()


@pytest.mark.parametrize("keep_alive_s", [0.8, 60.0])
async def test_the_open_loop_loses_nothing_below_the_keep_alive_rate(
    server: Server, keep_alive_s: float
) -> None:
    """Two connections at 0.75 req/s: each is idle ~2.7 s between its requests, past the
    server's 1 s (the old client lost every request from the third on). With the pool's
    keep-alive below the server's, or above it (then a closed connection is noticed or
    the search retried), every request is answered."""
    result = await _open_loop(
        server.port,
        SEARCH,
        [{"query": "harbour"}],
        rate=0.75,
        seconds=6,
        connections=2,
        keep_alive_s=keep_alive_s,
    )
    assert result["requests"] == 4
    assert result["failures"] == 0, result
    assert server.healthy()
