"""``create_app(settings)``: the FastAPI application around one ``Runtime``."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ragtide import __version__
from ragtide.api.errors import install_error_handlers
from ragtide.api.fastpath import SearchFastPath, warm_routes
from ragtide.api.limits import InFlightLimitMiddleware
from ragtide.api.middleware import RequestMiddleware
from ragtide.api.openapi import install_openapi
from ragtide.api.routes import chat, documents, health, openai_compat, pages, tasks
from ragtide.api.routes import tenants as tenant_routes
from ragtide.audit import configure_audit
from ragtide.auth.authenticator import Authenticator
from ragtide.auth.jwt import JWTVerifier
from ragtide.components import TenantStore
from ragtide.errors import ConfigError
from ragtide.grpc import start_grpc
from ragtide.ingest.pipeline import Ingestor
from ragtide.observability import (
    READY,
    LoopWatch,
    configure_logging,
    configure_tenant_labels,
)
from ragtide.registry import Registry
from ragtide.runtime import Runtime, build_runtime
from ragtide.settings import Settings
from ragtide.tenants import TenantDirectory

__all__ = ["create_app"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    runtime: Runtime | None = None,
    configure_logs: bool = True,
) -> FastAPI:
    """Build the app. Components are built now (cheap) and started in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Watched from the start: loading and warming must not block the loop either.
        async with LoopWatch(blocked_after=settings.logging.blocked_loop_seconds):
            async with serving(app):
                yield

    @asynccontextmanager
    async def serving(app: FastAPI) -> AsyncIterator[None]:
        if configure_logs:
            configure_logging(settings.logging.level, settings.logging.format)
        # FastAPI prepares its routes while the runtime starts (its lock makes that safe)
        warming = asyncio.ensure_future(asyncio.to_thread(warm_routes, app.router.routes))
        reg = registry or Registry.from_entry_points(settings.plugins.allow)
        rt = runtime or build_runtime(settings, reg)
        app.state.runtime = rt
        configure_tenant_labels(settings.tenants.metric_tenants)
        configure_audit(settings.tenants.audit_log)
        await rt.start()
        await rt.warm()  # this process serves searches: load what they will read
        if not isinstance(rt.store, TenantStore):
            raise ConfigError(f"the store {settings.store.use!r} cannot keep tenants")
        tenants = TenantDirectory(rt, rt.store, reg)
        jwt = JWTVerifier(settings.auth.jwt) if settings.auth.jwt.enabled else None
        auth = Authenticator(settings.auth, rt.store, tenants, jwt=jwt)
        await auth.start()
        app.state.tenants, app.state.auth = tenants, auth
        app.state.ingestor = Ingestor(rt)
        if not settings.auth.enabled:
            if not settings.auth.allow_open and not _loopback(settings.http.host):
                raise ConfigError(
                    f"refusing to serve {settings.http.host} without authentication: set "
                    "RAGTIDE_AUTH__ENABLED=true (or RAGTIDE_AUTH__ALLOW_OPEN=true on purpose)"
                )
            logger.warning(
                "authentication is OFF: every caller is tenant 'default' with every scope",
                extra={"host": settings.http.host},
            )
        grpc_server = await start_grpc(app.state, settings)  # None unless grpc.port is set
        await warming  # the first request after ready is not the slow one
        # Everything built so far lives as long as the process: keep the cyclic garbage
        # collector from walking it again on every full collection (p99 latency).
        gc.freeze()
        logger.info(
            "ragtide ready", extra={"version": __version__, "data_dir": str(settings.data_dir)}
        )
        try:
            yield
        finally:
            READY.set(0)
            if grpc_server is not None:
                await grpc_server.stop(settings.http.grace_seconds)
            await auth.aclose()
            await tenants.aclose()
            await rt.aclose()
            logger.info("ragtide stopped")

    app = FastAPI(
        title="Ragtide",
        version=__version__,
        lifespan=lifespan,
        description="Retrieval-augmented chat over each namespace's own documents.",
        docs_url=None,  # /docs and /redoc: pages.router, from packaged assets (offline)
        redoc_url=None,
    )
    app.state.runtime = None
    app.state.draining = False
    install_error_handlers(app)
    # Innermost first: the search fast path sits inside the request middleware and the
    # in-flight cap, like every route.
    app.add_middleware(SearchFastPath)
    app.add_middleware(
        RequestMiddleware,
        max_body_bytes=settings.http.max_body_bytes,
        max_upload_bytes=settings.http.max_upload_bytes,
        access_log=settings.logging.access_log and settings.logging.level in ("DEBUG", "INFO"),
        json_logs=settings.logging.format == "json",
    )
    app.add_middleware(InFlightLimitMiddleware, max_in_flight=settings.http.max_in_flight)
    app.include_router(health.router)
    app.include_router(documents.router)
    app.include_router(chat.router)
    app.include_router(openai_compat.router)
    app.include_router(tasks.router)
    app.include_router(tenant_routes.router)
    app.include_router(pages.router)

    install_openapi(app, settings)

    try:
        from ragtide.mcp import mount_mcp
    except ImportError:  # the mcp extra is not installed
        pass
    else:
        mount_mcp(app, settings)
    return app
