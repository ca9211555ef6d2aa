"""An ASGI app served by uvicorn on 127.0.0.1 in a thread: a real HTTP server for a test.

    with ThreadedApp(Starlette(routes=[...])) as server:
        client.get(server.url("/v1/models"))

The socket is bound before the thread starts, so ``port`` is known at once; ``start``
returns when uvicorn says it is serving (its own flag, no sleeps).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import uvicorn


class ThreadedApp:
    def __init__(self, app: Any, **options: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        settings: dict[str, Any] = {
            "log_level": "warning", "access_log": False, "lifespan": "off", "ws": "none",
        }  # fmt: skip
        config = uvicorn.Config(app, **(settings | options))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],))

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()
        while not self._server.started:  # readiness: poll uvicorn's flag
            if not self._thread.is_alive():
                raise RuntimeError("the test server failed to start")
            self._thread.join(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join()
        self._sock.close()

    def __enter__(self) -> ThreadedApp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
