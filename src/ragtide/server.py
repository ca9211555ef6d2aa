"""Run the app under uvicorn with a drain that an autoscaler and a load balancer can trust.

On SIGTERM (or SIGINT): ``/ready`` turns 503 at once; the server keeps serving for
``http.drain_seconds`` so the load balancer notices; then uvicorn stops accepting,
finishes in-flight requests and streams for up to ``http.grace_seconds``, and the
process exits 0. A second signal skips the drain.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn

from ragtide.api.app import create_app
from ragtide.observability import READY, configure_logging
from ragtide.settings import Settings

__all__ = ["DrainingServer", "serve"]

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self._drain_seconds = drain_seconds
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.loaded_app if self.config.loaded else None
        self._mark_draining(app)
        if self._draining or self._drain_seconds <= 0:
            self._exit(sig, frame)
            return
        self._draining = True
        logger.info("draining", extra={"signal": sig, "drain_s": self._drain_seconds})
        asyncio.get_running_loop().call_later(self._drain_seconds, self._exit, sig, frame)

    def _exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals once it has shut down, so the process would
        # die of SIGTERM; a drain that finished is a clean exit, status 0.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()

    @staticmethod
    def _mark_draining(app: object) -> None:
        READY.set(0)
        state_owner = getattr(app, "app", app)  # uvicorn may wrap the app in a proxy
        for candidate in (app, state_owner):
            state = getattr(candidate, "state", None)
            if state is not None:
                state.draining = True


def serve(settings: Settings) -> int:
    configure_logging(settings.logging.level, settings.logging.format)
    app = create_app(settings, configure_logs=False)
    config = uvicorn.Config(
        app,
        host=settings.http.host,
        port=settings.http.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.http.grace_seconds) or None,
        server_header=False,
    )
    DrainingServer(config, settings.http.drain_seconds).run()
    return 0
