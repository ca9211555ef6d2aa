"""The standard grpc.health.v1.Health (for Kubernetes' gRPC probes) and server reflection
(grpcurl, generic clients), served beside ragtide.v1.Ragtide."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ragtide.errors import ConfigError
from ragtide.grpc import start_grpc
from ragtide.settings import Settings
from tests.grpc.conftest import Stack, grpc_settings, open_stack

pytestmark = pytest.mark.anyio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _status(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def _eventually(channel: grpc.aio.Channel, want: int, service: str = "") -> None:
    for _ in range(100):
        if await _status(channel, service) == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"health never became {want}")


async def test_health_follows_readiness_and_draining(stack: Stack) -> None:
    assert await _status(stack.channel) == SERVING
    assert await _status(stack.channel, "ragtide.v1.Ragtide") == SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _status(stack.channel, "no.such.Service")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    stack.app.state.draining = True  # what the server does on SIGTERM
    await _eventually(stack.channel, NOT_SERVING)
    assert await _status(stack.channel, "ragtide.v1.Ragtide") == NOT_SERVING
    stack.app.state.draining = False
    await _eventually(stack.channel, SERVING)


async def test_health_is_not_serving_when_a_store_does_not_answer(stack: Stack) -> None:
    from ragtide.errors import BackendUnavailable

    memory = stack.app.state.runtime.memory
    real = memory.ping

    async def down() -> None:
        raise BackendUnavailable("memory store down")

    memory.ping = down
    try:
        await _eventually(stack.channel, NOT_SERVING)
    finally:
        memory.ping = real
    await _eventually(stack.channel, SERVING)


async def test_stop_ends_even_when_a_check_swallows_the_cancellation(stack: Stack) -> None:
    """The health watcher is cancelled by stop(); a cancellation that lands in a
    readiness check can be lost there (asyncio.wait_for lost them on Python 3.11, and a
    component's check still can): stop() returns all the same, instead of waiting for a
    watcher that goes on checking (the hang once seen at the end of these tests)."""
    memory = stack.app.state.runtime.memory  # one of the stores readiness pings
    entered = asyncio.Event()

    async def swallowing() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()  # never set: only a cancellation ends it
        except asyncio.CancelledError:
            return  # lost, as wait_for could lose it

    real = memory.ping
    memory.ping = swallowing
    await entered.wait()  # the watcher is inside the check
    stopping = asyncio.ensure_future(stack.server.stop(0))
    try:
        # Without the fix stop() never returns: the watcher's next check blocks again.
        done, _ = await asyncio.wait({stopping}, timeout=10)
        assert stopping in done and stopping.exception() is None
    finally:
        memory.ping = real  # a regression fails here, and must not hang the teardown:
        watcher = stack.server._watch
        if watcher is not None and not stopping.done():
            watcher.cancel()  # lands in a sleep or in the real check now
            await asyncio.wait({stopping}, timeout=10)
    assert stack.server._watch is None


async def test_reflection_lists_and_describes_the_services(stack: Stack) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(stack.channel)

    async def ask(**request: str) -> reflection_pb2.ServerReflectionResponse:
        call = stub.ServerReflectionInfo(timeout=5)
        await call.write(reflection_pb2.ServerReflectionRequest(**request))
        await call.done_writing()
        reply = await call.read()
        assert isinstance(reply, reflection_pb2.ServerReflectionResponse)
        return reply

    listed = await ask(list_services="")
    names = {s.name for s in listed.list_services_response.service}
    assert names == {
        "ragtide.v1.Ragtide",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    described = await ask(file_containing_symbol="ragtide.v1.Ragtide")
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    ours = next(f for f in files if f.package == "ragtide.v1")
    assert ours.name == "ragtide/v1/ragtide.proto"
    (service,) = ours.service
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.method}
    assert methods == {
        "Chat": (False, False),
        "StreamChat": (False, True),
        "Search": (False, False),
        "ListDocuments": (False, False),
        "UploadDocument": (True, False),
    }
    search = next(m for m in ours.message_type if m.name == "SearchRequest")
    assert [f.name for f in search.field] == ["namespace", "query", "top_k"]


async def test_port_zero_is_off_and_a_taken_port_is_a_config_error(tmp_path: Path) -> None:
    assert await start_grpc(object(), Settings(data_dir=tmp_path)) is None
    settings = grpc_settings(tmp_path)
    async with open_stack(settings) as stack:
        again = settings.model_copy(
            update={"grpc": settings.grpc.model_copy(update={"port": stack.server.port})}
        )
        with pytest.raises(ConfigError, match="cannot listen"):
            await start_grpc(stack.app.state, again)


async def test_open_grpc_on_a_public_address_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, grpc={"port": 1, "host": "0.0.0.0"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="without authentication"):
        await start_grpc(object(), settings)
