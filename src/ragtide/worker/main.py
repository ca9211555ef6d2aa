"""``ragtide worker``: build the runtime the API builds, consume tasks, drain on SIGTERM.

The probe endpoint starts first, so ``/healthz`` answers while models load and ``/ready``
says why the worker is not ready yet. SIGTERM (or SIGINT) starts the drain; a second
signal skips the wait for tasks in flight (their messages go back to the queue). A
drained worker exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable

from ragtide import __version__
from ragtide.components import ResultStore, TenantStore
from ragtide.errors import RagtideError
from ragtide.observability import READY, LoopWatch, configure_logging
from ragtide.registry import Registry
from ragtide.runtime import build_runtime
from ragtide.settings import Settings
from ragtide.tenants import TenantDirectory
from ragtide.worker.consumer import Consumer
from ragtide.worker.http import ProbeApp, probe_server

__all__ = ["run_worker"]

logger = logging.getLogger(__name__)


def _secrets(store: object) -> Callable[[str], Awaitable[bytes | None]] | None:
    """Each tenant's webhook signing secret, from its record (the default tenant has one
    once an admin has written its record)."""
    if not isinstance(store, TenantStore):
        return None
    tenants: TenantStore = store

    async def secret(tenant: str) -> bytes | None:
        record = await tenants.get_tenant(tenant)
        return None if record is None else record.webhook_secret.encode()

    return secret


def run_worker(settings: Settings) -> int:
    """Run until drained; the process exit status."""
    configure_logging(settings.logging.level, settings.logging.format)
    if settings.rabbitmq.url is None:
        logger.error("tasks are disabled: set rabbitmq.url (RAGTIDE_RABBITMQ__URL)")
        return 2
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is not on every platform
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_watched(settings))


async def _watched(settings: Settings) -> int:
    """``_main`` with its event loop watched (``LoopWatch``), as the API's is: a task that
    blocks the loop stalls the worker's probes and its other tasks' acks."""
    async with LoopWatch(blocked_after=settings.logging.blocked_loop_seconds):
        return await _main(settings)


async def _main(settings: Settings) -> int:
    try:
        registry = Registry.from_entry_points(settings.plugins.allow)
        rt = build_runtime(settings, registry)
        results: ResultStore = registry.build(ResultStore, settings.result_store)
    except RagtideError as exc:
        logger.error("invalid configuration", extra={"reason": exc.message})
        return 1
    tenants = (
        TenantDirectory(rt, rt.store, registry) if isinstance(rt.store, TenantStore) else None
    )
    consumer = Consumer(
        settings,
        rt,
        results,
        callback_secret=_secrets(rt.store),
        tenant_runtime=None if tenants is None else tenants.runtime,
    )
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        logger.info("signal received", extra={"signal": sig.name})
        consumer.stop()
        if signals > 1:
            consumer.abort()

    try:
        sock = _bind(settings.worker.host, settings.worker.port)
    except OSError as exc:
        logger.error(
            "cannot listen",
            extra={"host": settings.worker.host, "port": settings.worker.port, "error": str(exc)},
        )
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    probes = probe_server(ProbeApp(consumer.ready_reason, consumer.refresh_depth))
    http = asyncio.create_task(probes.serve(sockets=[sock]))
    try:
        start = getattr(results, "start", None)
        if start is not None:
            await start()
        await rt.start()
        logger.info("ragtide worker started", extra={"version": __version__})
        await consumer.run()
    except RagtideError as exc:
        logger.error("worker failed", extra={"reason": exc.message})
        return 1
    finally:
        READY.set(0)
        probes.should_exit = True
        await http
        close = getattr(results, "aclose", None)
        if close is not None:
            await close()
        await rt.aclose()
        sock.close()
        logger.info("ragtide worker stopped")
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """The probe endpoint's listening socket (bound here, so a busy port is our error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
