"""Best-effort callbacks: POST a finished task to the ``callback_url`` its client gave.

A callback is sent after the task's message was settled, so it never holds an ack; it
is bounded by one overall timeout, and a failure is logged, never retried
(the client can always ``GET`` the task). Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

__all__ = ["CallbackSender"]

logger = logging.getLogger(__name__)


class CallbackSender:
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    async def send(self, url: str, payload: dict[str, Any]) -> bool:
        """POST ``payload`` as JSON; True when the receiver answered 2xx in time."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
        try:
            response = await asyncio.wait_for(self._client.post(url, json=payload), self._timeout_s)
        except (httpx.HTTPError, TimeoutError) as exc:
            logger.warning(
                "callback failed",
                extra={"task_id": payload.get("task_id"), "error": type(exc).__name__},
            )
            return False
        if response.status_code >= 300:
            logger.warning(
                "callback refused",
                extra={"task_id": payload.get("task_id"), "status": response.status_code},
            )
            return False
        return True

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
