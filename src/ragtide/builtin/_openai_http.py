"""What the OpenAI-compatible clients share: one POST with retries, failures mapped onto
the error tree (``OpenAIChatModel`` for ``/chat/completions``, ``OpenAIEmbedder`` for
``/embeddings``).

- connect errors, a connection reset or closed before any response, HTTP 429 and 5xx
  are retried up to ``max_retries`` times, waiting ``backoff_s * 2**attempt`` or what
  ``Retry-After`` asks for; a wait longer than ``max_backoff_s`` is not attempted at all;
- a connect timeout once the retries are used up, or any other timeout → ``UpstreamTimeout``
  (a read timeout is never retried: the request may still be running upstream);
- connection failures, 5xx, 429 after the retries and any other refusal → ``UpstreamError``;
  401 and 403 say the server rejected the credentials.

The API key is redacted from the provider's error text; it is never logged.
"""

from __future__ import annotations

import email.utils
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx

from ragtide.errors import UpstreamError, UpstreamTimeout

__all__ = ["Upstream", "error_detail", "retry_after"]

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({429, 500, 502, 503, 504})
DETAIL_CHARS = 300


@dataclass(frozen=True, slots=True)
class Upstream:
    """One OpenAI-compatible server as a client sees it: what to call it in errors, the
    timeout it was given (for the message), the retry budget and the key to redact."""

    what: str  # "the LLM", "the embedding server"
    timeout_s: float
    max_retries: int
    backoff_s: float
    max_backoff_s: float
    secret: str = ""
    retried_event: str = "upstream request retried"  # the log message of a retry

    def timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"{self.what} did not answer within {self.timeout_s:g} s")

    async def post(
        self, client: httpx.AsyncClient, path: str, body: dict[str, Any], *, stream: bool
    ) -> httpx.Response:
        """POST ``body`` to ``path``, retrying what may succeed later; the response returned
        is successful (and, with ``stream``, not yet read)."""
        for attempt in range(self.max_retries + 1):
            request = client.build_request("POST", path, json=body)
            error: UpstreamError
            cause: Exception
            wait: float | None = None
            try:
                response = await client.send(request, stream=stream)
            except httpx.ConnectTimeout as exc:
                error, cause = self.timeout(), exc
            except httpx.ConnectError as exc:
                error, cause = UpstreamError(f"could not connect to {self.what}"), exc
            except httpx.TimeoutException as exc:  # the request may be running: no retry
                raise self.timeout() from exc
            except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                # Reset or closed before a response began: nothing was answered, and the
                # request has no side effect to repeat, so it is tried again.
                error, cause = UpstreamError(f"the connection to {self.what} failed"), exc
            except httpx.TransportError as exc:
                raise UpstreamError(f"the connection to {self.what} failed") from exc
            else:
                if response.is_success:
                    return response
                error, cause = await self._refusal(response)
                if response.status_code not in RETRYABLE:
                    raise error from cause
                wait = retry_after(response.headers.get("Retry-After"))
            delay = self.backoff_s * 2**attempt if wait is None else wait
            if attempt == self.max_retries or delay > self.max_backoff_s:
                raise error from cause
            logger.warning(
                self.retried_event,
                extra={"attempt": attempt + 1, "error": error.message, "delay_s": delay},
            )
            await anyio.sleep(delay)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def _refusal(self, response: httpx.Response) -> tuple[UpstreamError, Exception]:
        """The error for a non-2xx response, and an ``HTTPStatusError`` as its cause."""
        try:
            await response.aread()
        except httpx.HTTPError:
            pass  # the status alone is enough to explain the failure
        finally:
            await response.aclose()
        status = response.status_code
        cause = httpx.HTTPStatusError(f"HTTP {status}", request=response.request, response=response)
        if status in (401, 403):
            return UpstreamError(f"{self.what} rejected the credentials (HTTP {status})"), cause
        if status == 429:
            return UpstreamError(f"{self.what} is rate limiting requests (HTTP 429)"), cause
        detail = self.redact(error_detail(response))
        suffix = f": {detail}" if detail else ""
        return UpstreamError(f"{self.what} returned HTTP {status}{suffix}"), cause

    def redact(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text


def error_detail(response: httpx.Response) -> str:
    """The provider's own error message, if the body has one."""
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return ""
    return str(message)[:DETAIL_CHARS] if message else ""


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
