"""A chat model behind any OpenAI-compatible ``/chat/completions`` endpoint.

Works with OpenAI itself and with servers that speak the same protocol (vLLM, llama.cpp,
Ollama, LiteLLM and other gateways). Failures map onto the error tree like this:

- connect errors, a connection reset or closed before any response, HTTP 429 and 5xx
  are retried up to ``max_retries`` times, waiting ``backoff_s * 2**attempt`` or what
  ``Retry-After`` asks for; a wait longer than ``max_backoff_s`` is not attempted at all;
- a timeout, once retries (for connect timeouts) are used up → ``UpstreamTimeout``; a
  read timeout is never retried (the generation may still be running upstream);
- connection failures, 5xx, malformed bodies and any other refusal → ``UpstreamError``;
- 401 and 403 → ``UpstreamError`` saying the LLM rejected the credentials;
- 429 after the retries → ``UpstreamError`` as well, not ``RateLimited``: that error
  tells *our* caller to slow down (HTTP 429), while an exhausted provider quota is an
  outage of a dependency (HTTP 502) that the caller cannot fix by waiting for its own
  budget, and the provider's ``Retry-After`` applies to our key, not to the caller.

``generate`` and ``stream`` take per-request ``max_tokens`` and ``temperature``; the
stream asks for token usage (``stream_options.include_usage``, ``stream_usage``) and
exposes what the server reported as ``stream.usage`` once it has ended. ``complete`` is
the raw call with ``tools`` for the tool loop (``ragtide.tools``). Closing a stream
early, or cancelling its consumer, closes the HTTP response: the server sees the client
go away and stops generating.

The API key is sent only in the ``Authorization`` header; it never appears in error
messages or logs, and prompt content is never logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ragtide.builtin._openai_http import Upstream
from ragtide.errors import UpstreamError, UpstreamTimeout
from ragtide.prompts import build_messages, cited_indexes
from ragtide.types import Prompt, Reply

__all__ = ["OpenAIChatModel", "OpenAIStream"]

logger = logging.getLogger(__name__)

_DETAIL_CHARS = 300
_DRAIN_S = 0.05  # how long the end of a stream's body may take after [DONE]


class OpenAIChatModel:
    """Generates answers with an OpenAI-compatible chat completions API."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        base_url: str = "https://api.openai.com/v1"
        api_key: SecretStr | None = None
        model: str = "gpt-4o-mini"
        temperature: float = Field(default=0.0, ge=0.0, le=2.0)
        max_tokens: int | None = Field(default=1024, gt=0)
        timeout_s: float = Field(default=30.0, gt=0, description="Per read, write or pool wait.")
        connect_timeout_s: float = Field(default=5.0, gt=0)
        max_retries: int = Field(default=2, ge=0, le=10)
        backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles.")
        max_backoff_s: float = Field(
            default=10.0, ge=0, description="Longest wait before a retry; longer ones fail."
        )
        system_prompt: str | None = Field(
            default=None, description="Replaces the default instructions (sources still follow)."
        )
        max_context_chars: int = Field(default=12000, gt=0)
        context_window: int | None = Field(
            default=None,
            gt=0,
            description="The model's context window in tokens (e.g. llama.cpp's --n_ctx): "
            "sources are packed into what it leaves after max_tokens, the instructions, the "
            "history and the message, with a safe (high) token estimate. None: only "
            "max_context_chars bounds them.",
        )
        max_history_turns: int = Field(default=6, ge=0)
        stream_usage: bool = Field(
            default=True,
            description="Ask for token usage in streams (stream_options.include_usage); "
            "turn off for a server that refuses the option.",
        )
        extra_body: dict[str, Any] = Field(
            default_factory=dict,
            description="More request fields for this server (e.g. top_k, min_tokens); "
            "they never replace the ones Ragtide sets.",
        )

    def __init__(self, config: Config | None = None) -> None:
        self._config = config or self.Config()
        self._client: httpx.AsyncClient | None = None
        c = self._config
        key = c.api_key.get_secret_value() if c.api_key else ""
        self._upstream = Upstream(
            "the LLM", c.timeout_s, c.max_retries, c.backoff_s, c.max_backoff_s, key,
            retried_event="llm request retried",
        )  # fmt: skip

    @property
    def model_id(self) -> str:
        return self._config.model

    async def start(self) -> None:
        if self._client is not None:
            return
        headers = {"Accept": "application/json"}
        if self._config.api_key is not None:
            headers["Authorization"] = f"Bearer {self._config.api_key.get_secret_value()}"
        self._client = httpx.AsyncClient(
            base_url=self._config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(self._config.timeout_s, connect=self._config.connect_timeout_s),
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def messages(self, prompt: Prompt) -> list[dict[str, str]]:
        """The chat messages for ``prompt`` under this model's prompt settings (sources
        packed into ``context_window`` minus the answer's ``max_tokens``, when known)."""
        max_tokens, _ = _options(prompt, None, None)
        if max_tokens is None:
            max_tokens = self._config.max_tokens
        return build_messages(
            prompt,
            system=self._config.system_prompt,
            max_context_chars=self._config.max_context_chars,
            max_history_turns=self._config.max_history_turns,
            max_context_tokens=self._config.context_window,
            reserve_tokens=max_tokens or 0,
        )

    async def generate(
        self, prompt: Prompt, *, max_tokens: int | None = None, temperature: float | None = None
    ) -> Reply:
        max_tokens, temperature = _options(prompt, max_tokens, temperature)
        body = self._body(self.messages(prompt), False, max_tokens, temperature)
        completion = await self._complete(body)
        content = completion["message"].get("content") or ""
        if not isinstance(content, str):
            raise UpstreamError("the LLM returned a malformed response")
        usage = completion["usage"]
        return Reply(content, cited=cited_indexes(content, len(prompt.hits)), usage=usage)

    def stream(
        self, prompt: Prompt, *, max_tokens: int | None = None, temperature: float | None = None
    ) -> OpenAIStream:
        """The answer in pieces; ``usage`` is filled in when the server reports it."""
        max_tokens, temperature = _options(prompt, max_tokens, temperature)
        body = self._body(self.messages(prompt), True, max_tokens, temperature)
        return OpenAIStream(self, body)

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        tool_choice: str | Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """One completion of ``messages``, offering ``tools`` (OpenAI's format).

        Returns ``{"message": <the assistant message, tool_calls included>, "usage":
        {...}, "finish_reason": ...}``: the wire format, for the tool loop.
        """
        body = self._body([dict(m) for m in messages], False, max_tokens, temperature)
        if tools:
            body["tools"] = [dict(t) for t in tools]
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        return await self._complete(body)

    async def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._send(body, stream=False)
        try:
            data = response.json()
            choice = data["choices"][0]
            message = choice["message"]
            usage = data.get("usage") or {}
            if not isinstance(message, dict) or not isinstance(usage, dict):
                raise TypeError("message and usage must be objects")
            calls = message.get("tool_calls")
            if calls is not None and not isinstance(calls, list):
                raise TypeError("tool_calls must be a list")
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise UpstreamError("the LLM returned a malformed response") from exc
        return {
            "message": message,
            "usage": _counts(usage),
            "finish_reason": choice.get("finish_reason") if isinstance(choice, dict) else None,
        }

    async def _pieces(self, body: dict[str, Any], usage: dict[str, int]) -> AsyncGenerator[str]:
        response = await self._send(body, stream=True)
        try:
            lines = response.aiter_lines()
            async for line in lines:
                if not line.startswith("data:"):
                    continue  # blank separators, comments, "event:", "id:", "retry:"
                data = line[5:].strip()
                if data == "[DONE]":
                    # Read the body's end too (it follows at once), or closing the
                    # response closes the connection and every turn opens a new one.
                    with anyio.move_on_after(_DRAIN_S):
                        async for _ in lines:
                            pass
                    return
                piece, reported = _delta(data)
                if reported:
                    usage.update(reported)
                if piece:
                    yield piece
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(self._timeout_message()) from exc
        except httpx.TransportError as exc:
            raise UpstreamError("the connection to the LLM broke while streaming") from exc
        finally:
            # Also when the consumer stops early (``aclose()``) or is cancelled: closing a
            # response that is not fully read closes its connection, so the provider sees
            # the client go away and stops generating (and billing) the answer.
            with anyio.CancelScope(shield=True):
                await response.aclose()

    def _body(
        self,
        messages: list[dict[str, Any]],
        stream: bool,
        max_tokens: int | None,
        temperature: float | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = dict(self._config.extra_body)
        body.update(
            model=self._config.model,
            messages=messages,
            temperature=self._config.temperature if temperature is None else temperature,
            stream=stream,
        )
        limit = max_tokens if max_tokens is not None else self._config.max_tokens
        if limit is not None:
            body["max_tokens"] = limit
        else:
            body.pop("max_tokens", None)
        body.pop("stream_options", None)  # only ours, and only where it is allowed
        if stream and self._config.stream_usage:
            body["stream_options"] = {"include_usage": True}
        return body

    async def _send(self, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        """POST ``body``, retrying what may succeed later; the response is successful."""
        if self._client is None:
            raise RuntimeError("OpenAIChatModel.start() must be awaited before use")
        return await self._upstream.post(self._client, "chat/completions", body, stream=stream)

    def _timeout_message(self) -> str:
        return f"the LLM did not answer within {self._config.timeout_s:g} s"


def _delta(data: str) -> tuple[str, dict[str, int]]:
    """The content of one streamed chunk (``{"choices": [{"delta": {"content": ...}}]}``)
    and the usage it reports (the last chunk does, with ``include_usage``)."""
    try:
        event = json.loads(data)
        if "error" in event:
            detail = event["error"].get("message", "") if isinstance(event["error"], dict) else ""
            raise UpstreamError(f"the LLM failed while streaming: {str(detail)[:_DETAIL_CHARS]}")
        choices = event.get("choices") or ()  # a usage-only chunk has no choices
        content = choices[0].get("delta", {}).get("content") if choices else None
        usage = event.get("usage")
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise UpstreamError("the LLM sent a malformed stream event") from exc
    if content is not None and not isinstance(content, str):
        raise UpstreamError("the LLM sent a malformed stream event")
    return content or "", _counts(usage) if isinstance(usage, dict) else {}


def _counts(usage: Mapping[str, Any]) -> dict[str, int]:
    """The integer counts of a usage object (nested details are left out)."""
    return {k: v for k, v in usage.items() if type(v) is int}


class OpenAIStream:
    """An answer being streamed: iterate it for the text; ``usage`` holds the token counts
    the server reported (empty until its last chunk, or if it reports none). ``aclose()``
    (or cancelling the consumer) drops the request."""

    def __init__(self, model: OpenAIChatModel, body: dict[str, Any]) -> None:
        self.usage: dict[str, int] = {}
        self._pieces = model._pieces(body, self.usage)

    def __aiter__(self) -> OpenAIStream:
        return self

    async def __anext__(self) -> str:
        return await self._pieces.__anext__()

    async def aclose(self) -> None:
        await self._pieces.aclose()


def _options(
    prompt: Prompt, max_tokens: int | None, temperature: float | None
) -> tuple[int | None, float | None]:
    """Explicit arguments first, then the request's options (``Prompt.options``)."""
    if max_tokens is None and isinstance(prompt.options.get("max_tokens"), int):
        max_tokens = int(prompt.options["max_tokens"])
    if temperature is None and isinstance(prompt.options.get("temperature"), int | float):
        temperature = float(prompt.options["temperature"])
    return max_tokens, temperature
