"""The gRPC server: ``ragtide.v1.Ragtide``, ``grpc.health.v1.Health`` and reflection.

It runs in the app's event loop, on its own port, over the state the HTTP lifespan built
(so both faces share one runtime, tenant directory, authenticator and ingestor). Health
and reflection are the standard services of ``grpcio-health-checking`` and
``grpcio-reflection``. Health says SERVING for the whole server (``""``) and for
``ragtide.v1.Ragtide`` exactly when ``/ready`` would answer 200: the runtime started, the
process is not draining, and every store answers; it is re-checked every
``grpc.health_interval_s``, so Kubernetes' gRPC probes (``grpc: {port: …}``) work as
the HTTP ones. ``stop(grace)`` turns health NOT_SERVING, refuses new calls and lets
calls in flight finish for up to ``grace`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ragtide.errors import ConfigError, RagtideError
from ragtide.grpc.service import RagtideService
from ragtide.grpc.stubs import SERVICE_NAME, pb_grpc
from ragtide.settings import Settings

__all__ = ["GrpcServer"]

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0  # as /ready
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class GrpcServer:
    def __init__(self, state: Any, settings: Settings) -> None:
        self._state = state
        self._settings = settings
        self.host = settings.grpc.host or settings.http.host
        self.port = settings.grpc.port
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        s, auth = self._settings.grpc, self._settings.auth
        if not auth.enabled and not auth.allow_open and not _loopback(self.host):
            raise ConfigError(
                f"refusing to serve gRPC on {self.host} without authentication: set "
                "RAGTIDE_AUTH__ENABLED=true (or RAGTIDE_AUTH__ALLOW_OPEN=true on purpose)"
            )
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", max(s.max_message_bytes, 16 * 1_048_576)),
                ("grpc.so_reuseport", 0),  # a second process on the port fails, not shares
            ],
            maximum_concurrent_rpcs=s.max_concurrent_rpcs,
        )
        pb_grpc.add_RagtideServicer_to_server(RagtideService(self._state), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        services = [SERVICE_NAME, health.SERVICE_NAME]
        if s.reflection:
            services.append(reflection.SERVICE_NAME)
            reflection.enable_server_reflection(services, server)
        try:
            bound = server.add_insecure_port(_address(self.host, self.port))
        except RuntimeError as exc:
            where = _address(self.host, self.port)
            raise ConfigError(f"gRPC cannot listen on {where}: {exc}") from None
        if not bound:
            raise ConfigError(f"gRPC cannot listen on {_address(self.host, self.port)}")
        self.port = bound
        await self._check()
        await server.start()
        self._server = server
        self._watch = asyncio.create_task(self._watch_readiness(), name="grpc-health")
        logger.info("grpc serving", extra={"host": self.host, "port": self.port})

    async def _readiness(self) -> bool:
        state = self._state
        if getattr(state, "draining", False):
            return False
        rt = getattr(state, "runtime", None)
        if rt is None or not rt.started:
            return False
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):  # not wait_for: see _watch_readiness
                await rt.check_ready()
        except (RagtideError, TimeoutError):
            return False
        except Exception:  # a probe must answer, whatever a component raised
            logger.warning("grpc readiness check failed", exc_info=True)
            return False
        return True

    async def _check(self) -> None:
        status = SERVING if await self._readiness() else NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)

    async def _watch_readiness(self) -> None:
        # Ends on the flag as well as on cancellation: a cancellation that lands while a
        # check finishes can be swallowed on the way (asyncio.wait_for did so on Python
        # 3.11, in a component's check it still can), and stop() would wait for ever.
        while not self._stopping:
            await asyncio.sleep(self._settings.grpc.health_interval_s)
            await self._check()

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, no new calls, ``grace`` seconds for the calls in flight."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self._health.enter_graceful_shutdown()
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
            logger.info("grpc stopped", extra={"port": self.port})
