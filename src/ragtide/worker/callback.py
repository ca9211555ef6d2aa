"""Best-effort callbacks: POST a finished task to the ``callback_url`` its client gave.

A callback is sent after the task's message was settled, so it never holds an ack. Each
one re-checks its URL with ``ragtide.webhooks.check_callback_url`` (the addresses behind
a name may have changed since the task was accepted), POSTs to the address it checked,
follows no redirect and is signed when the tenant has a webhook secret. The check and the
POST are bounded by one overall timeout; a failure is logged and counted
(``ragtide_webhooks_total{outcome}``), never raised and never retried (the client can
always ``GET`` the task).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import httpx
import orjson

from ragtide.errors import InvalidCallbackURL
from ragtide.observability import WEBHOOKS
from ragtide.settings import WebhookSettings
from ragtide.webhooks import (
    Resolver,
    check_callback_url,
    check_settings,
    deliver,
    signed_headers,
    webhook_client,
)

__all__ = ["CallbackSender"]

logger = logging.getLogger(__name__)

_MESSAGES = {
    "rejected_url": "callback URL refused",
    "failed": "callback failed",
    "refused": "callback refused by its receiver",
}


class CallbackSender:
    """Sends task callbacks under ``settings`` (``timeout_s`` overrides its timeout)."""

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        timeout_s: float | None = None,
        resolver: Resolver | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        check_settings(settings)  # a bad deny_cidrs fails the worker's start, not a callback
        self._settings = settings
        self._timeout_s = settings.timeout_s if timeout_s is None else timeout_s
        self._resolver = resolver
        self._verify = verify
        self._client: httpx.AsyncClient | None = None

    async def send(self, url: str, payload: dict[str, Any], *, secret: bytes | None) -> bool:
        """POST ``payload`` as JSON; True when the receiver answered 2xx in time."""
        task_id = payload.get("task_id")
        body = orjson.dumps(payload)
        try:
            async with asyncio.timeout(self._timeout_s):
                target = await check_callback_url(url, self._settings, resolver=self._resolver)
                status = await deliver(self._http(), target, body, signed_headers(body, secret))
        except InvalidCallbackURL as exc:
            return self._count("rejected_url", task_id=task_id, reason=exc.message)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            return self._count("failed", task_id=task_id, error=type(exc).__name__)
        if not 200 <= status < 300:  # a redirect too: it is not followed
            return self._count("refused", task_id=task_id, host=target.host, status=status)
        return self._count("delivered", task_id=task_id, host=target.host)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = webhook_client(self._timeout_s, verify=self._verify)
        return self._client

    @staticmethod
    def _count(outcome: str, **fields: Any) -> bool:
        WEBHOOKS.labels(outcome).inc()
        if outcome == "delivered":
            logger.debug("callback delivered", extra=fields)
            return True
        logger.warning(_MESSAGES[outcome], extra=fields)
        return False

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
