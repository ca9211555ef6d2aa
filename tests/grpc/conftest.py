"""A running app (its lifespan, in the test's event loop) with the gRPC server on its state,
and a real ``grpc.aio`` client over 127.0.0.1.

The chat model is ``slow``, a fake registered in a ``Registry`` built here: it streams a
few words with a pause between them and records whether its stream was closed before its
end (a client that went away) or ran to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import grpc
import httpx
import pytest
from pydantic import BaseModel

from ragtide.access import AccessPolicy
from ragtide.api.app import create_app
from ragtide.builtin.embedders import HashingEmbedder
from ragtide.builtin.intent import RuleIntentDetector
from ragtide.builtin.memory import InMemoryMemoryStore
from ragtide.builtin.policies import GroupPolicy
from ragtide.builtin.ratelimit import InMemoryRateLimiter
from ragtide.builtin.redis_cache import InMemoryAnswerCache
from ragtide.builtin.retrievers import HybridRetriever
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.builtin.task_results import InMemoryResultStore
from ragtide.components import (
    AnswerCache,
    ChatModel,
    DocumentStore,
    Embedder,
    IntentDetector,
    MemoryStore,
    RateLimiter,
    ResultStore,
    Retriever,
)
from ragtide.grpc import start_grpc
from ragtide.grpc.server import GrpcServer
from ragtide.grpc.stubs import pb, pb_grpc
from ragtide.prompts import cited_indexes
from ragtide.registry import Registry
from ragtide.settings import Settings
from ragtide.types import Prompt, Reply
from tests.api.conftest import ADMIN_KEY, KUBE, auth_settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SlowModel:
    """Streams ``words`` words, ``delay_s`` apart, then cites [1]."""

    class Config(BaseModel):
        words: int = 5
        delay_s: float = 0.0

    built: ClassVar[list[SlowModel]] = []

    def __init__(self, config: Config) -> None:
        self.config = config
        self.opened = 0
        self.finished = 0  # streams that reached their end
        self.closed_early = 0  # streams closed before their end (the client went away)
        self.closed = asyncio.Event()
        SlowModel.built.append(self)

    @property
    def model_id(self) -> str:
        return "slow"

    def _pieces(self) -> list[str]:
        return [f"word{i} " for i in range(self.config.words)] + ["[1]"]

    async def generate(self, prompt: Prompt) -> Reply:
        await asyncio.sleep(self.config.delay_s * self.config.words)
        text = "".join(self._pieces())
        return Reply(text, cited_indexes(text, len(prompt.hits)))

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        self.opened += 1
        done = False
        try:
            for piece in self._pieces():
                await asyncio.sleep(self.config.delay_s)
                yield piece
            done = True
            self.finished += 1
        finally:
            if not done:
                self.closed_early += 1
                self.closed.set()


def registry() -> Registry:
    return Registry(
        {
            DocumentStore: {"sqlite": SQLiteStore},
            Embedder: {"hashing": HashingEmbedder},
            Retriever: {"hybrid": HybridRetriever},
            IntentDetector: {"rules": RuleIntentDetector},
            ChatModel: {"slow": SlowModel},
            MemoryStore: {"memory": InMemoryMemoryStore},
            AnswerCache: {"memory": InMemoryAnswerCache},
            RateLimiter: {"memory": InMemoryRateLimiter},
            ResultStore: {"memory": InMemoryResultStore},
            AccessPolicy: {"groups": GroupPolicy},
        }
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def grpc_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "grpc": {"port": free_port(), "health_interval_s": 0.05},
        "chat_model": {"use": "slow"},
        "answer_cache_enabled": False,
    }
    base.update(overrides)
    return auth_settings(tmp_path, **base)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


ADMIN_MD = bearer(ADMIN_KEY)


@dataclass
class Stack:
    app: Any
    settings: Settings
    http: httpx.AsyncClient
    server: GrpcServer
    channel: grpc.aio.Channel
    stub: Any
    keys: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    @property
    def model(self) -> SlowModel:
        model = self.app.state.runtime.chat_model
        assert isinstance(model, SlowModel)
        return model

    async def put_tenant(self, tenant: str, **config: Any) -> None:
        r = await self.http.put(
            f"/v1/tenants/{tenant}", json=config, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert r.status_code in (200, 201), r.text

    async def key(self, tenant: str, scopes: list[str]) -> tuple[tuple[str, str], ...]:
        """A new API key of ``tenant``, as gRPC metadata."""
        r = await self.http.post(
            f"/v1/tenants/{tenant}/keys",
            json={"scopes": scopes},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert r.status_code == 201, r.text
        return bearer(r.json()["key"])

    async def upload_http(
        self, md: tuple[tuple[str, str], ...], ns: str, name: str, data: bytes
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/namespaces/{ns}/documents",
            files={"file": (name, data)},
            headers=dict(md),
        )


@contextlib.asynccontextmanager
async def open_stack(settings: Settings) -> AsyncIterator[Stack]:
    """The stack, closed in the task that opened it, whatever the body raised.

    A context manager, not a bare async generator: a generator left at its ``yield`` by
    a failing test is closed only by the event loop's shutdown, which closes every
    suspended generator (the app's nested lifespans among them) at once, and
    CPython 3.11 can crash on an async generator closed twice at the same time.
    """
    app = create_app(settings, registry=registry(), configure_logs=False)
    async with app.router.lifespan_context(app):
        # The app's lifespan starts gRPC itself (ragtide.api.app); if it does not, start
        # it here on the same state.
        server: GrpcServer | None = getattr(app.state, "grpc_server", None)
        ours = server is None
        if server is None:
            server = await start_grpc(app.state, settings)
        assert server is not None
        transport = httpx.ASGITransport(app=app)
        try:
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://test") as http,
                grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
            ):
                stack = Stack(app, settings, http, server, channel, pb_grpc.RagtideStub(channel))
                await stack.put_tenant("acme", name="Acme")
                await stack.put_tenant("other", name="Other")
                stack.keys["acme"] = await stack.key("acme", ["read", "write"])
                stack.keys["acme-read"] = await stack.key("acme", ["read"])
                stack.keys["other"] = await stack.key("other", ["read", "write"])
                r = await stack.upload_http(stack.keys["acme"], "kb", "kube.md", KUBE)
                assert r.status_code == 201, r.text
                yield stack
        finally:
            if ours:
                await server.stop(0)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(grpc_settings(tmp_path)) as s:
        yield s


__all__ = [
    "ADMIN_MD",
    "SlowModel",
    "Stack",
    "bearer",
    "grpc_settings",
    "open_stack",
    "pb",
    "pb_grpc",
]
