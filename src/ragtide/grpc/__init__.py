"""The gRPC service beside HTTP: same core, credentials, scopes, quotas and errors.

``start_grpc(app.state, settings)`` starts it in the running event loop when
``grpc.port`` is set (the app's lifespan calls it) and returns the server to ``stop()``;
with ``grpc.port`` 0 it returns None and imports nothing of gRPC, so the ``grpc`` extra
is needed only where the service is turned on. The service is described by
``proto/ragtide/v1/ragtide.proto``; its stubs are generated at install time
(``python -m ragtide.grpc.codegen``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragtide.errors import ConfigError

if TYPE_CHECKING:
    from ragtide.grpc.server import GrpcServer
    from ragtide.settings import Settings

__all__ = ["start_grpc"]


async def start_grpc(state: Any, settings: Settings) -> GrpcServer | None:
    """Serve gRPC on ``grpc.port`` next to the app whose ``state`` holds the runtime,
    the tenant directory, the authenticator and the ingestor (and gets ``grpc_server``);
    None when turned off."""
    if not settings.grpc.port:
        return None
    try:
        from ragtide.grpc.server import GrpcServer
    except ImportError as exc:
        raise ConfigError(
            f"grpc.port is set but gRPC cannot be served: {exc} "
            "(install the extra: pip install 'ragtide[grpc]', then python -m ragtide.grpc.codegen)"
        ) from None
    server = GrpcServer(state, settings)
    await server.start()
    state.grpc_server = server  # for tests and tools; the caller stops it
    return server
