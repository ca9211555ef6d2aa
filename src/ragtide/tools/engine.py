"""The tool loop: let a chat model call tools until it answers, within bounds.

    messages ─▶ model ─▶ tool calls? ─ no ─▶ answer
                  ▲           │ yes
                  └─ results ◀┘  (each call: validated, timed, logged, counted)

``ToolEngine.run(model, prompt, tools)`` returns a ``ToolRun``: the final ``Reply``
(usage summed over every model call) and the transcript of tool calls; ``events()`` is
the same loop yielding ``ToolCallStarted`` / ``ToolCallFinished`` as they happen and the
``ToolRun`` last, for streamed turns.

Bounds (``ToolLimits``): at most ``max_steps`` model turns may call tools (after that
the model is asked once more with ``tool_choice: "none"`` and must answer), at most
``max_calls_per_step`` calls per turn, ``tool_timeout_s`` per call, and ``deadline_s``
for the whole loop (a model call that would cross it fails with ``UpstreamTimeout``; a
tool call gets what is left). Tool failures never escape: an unknown tool, arguments
that do not match the schema, a tool that raises or one that runs out of time each
become a tool result ``{"error": "..."}`` the model can read and react to.

The model speaks OpenAI's wire format (``ToolCallingModel.complete``): the messages, the
tools in OpenAI's ``tools`` format, and back the assistant message with its
``tool_calls``. Argument values and results are never logged (they may hold the
tenant's data); the tool's name, outcome and duration are.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import anyio
from pydantic import BaseModel, ConfigDict, Field

from ragtide.errors import RagtideError, UpstreamError, UpstreamTimeout
from ragtide.observability import TOOL_CALL_SECONDS, TOOL_CALLS
from ragtide.prompts import build_messages, cited_indexes
from ragtide.tools.base import Tool, ToolContext, ToolError, check_arguments, openai_tool
from ragtide.types import Prompt, Reply

__all__ = [
    "Outcome",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolCallingModel",
    "ToolEngine",
    "ToolLimits",
    "ToolRecord",
    "ToolRun",
]

logger = logging.getLogger(__name__)

Outcome = Literal["ok", "error", "timeout", "unknown_tool", "invalid_arguments", "skipped"]
StopReason = Literal["answered", "max_steps"]

_GAVE_UP = "I could not finish answering with the tools available."


@runtime_checkable
class ToolCallingModel(Protocol):
    """A chat model that can be offered tools (``OpenAIChatModel`` is one)."""

    @property
    def model_id(self) -> str: ...

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        tool_choice: str | Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any]:
        """One chat completion: ``{"message": {"role": "assistant", "content": ...,
        "tool_calls": [...]}, "usage": {...}, "finish_reason": ...}``."""
        ...


class ToolLimits(BaseModel):
    """How far one turn's tool loop may go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int = Field(default=4, ge=0, le=32, description="Model turns that may call tools.")
    max_calls_per_step: int = Field(default=4, ge=1, le=32)
    tool_timeout_s: float = Field(default=5.0, gt=0)
    deadline_s: float = Field(default=60.0, gt=0, description="The whole loop, model included.")
    max_result_chars: int = Field(default=4000, ge=100)


@dataclass(frozen=True, slots=True)
class ToolRecord:
    """One tool call as it happened: what the model asked and what it got back."""

    step: int
    call_id: str
    name: str
    arguments: str  # the JSON text the model sent
    result: str  # the tool message's content, as sent back to the model
    outcome: Outcome
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": self.arguments,
            "result": self.result,
            "outcome": self.outcome,
            "duration_s": round(self.duration_s, 6),
        }


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    step: int
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    record: ToolRecord


@dataclass(frozen=True, slots=True)
class ToolRun:
    """The loop's result: the answer, every tool call, and the whole conversation."""

    reply: Reply
    calls: tuple[ToolRecord, ...]
    messages: tuple[Mapping[str, Any], ...]
    steps: int  # model calls made
    stopped: StopReason
    usage: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Call:
    id: str
    name: str
    arguments: str


class ToolEngine:
    """Runs the bounded tool loop; one engine may serve many turns concurrently."""

    def __init__(self, limits: ToolLimits | None = None) -> None:
        self.limits = limits or ToolLimits()

    async def run(
        self,
        model: ToolCallingModel,
        prompt: Prompt | Sequence[Mapping[str, Any]],
        tools: Sequence[Tool],
        *,
        limits: ToolLimits | None = None,
        ctx: ToolContext | None = None,
    ) -> ToolRun:
        result: ToolRun | None = None
        async with aclosing(self.events(model, prompt, tools, limits=limits, ctx=ctx)) as events:
            async for event in events:
                if isinstance(event, ToolRun):
                    result = event
        if result is None:  # pragma: no cover - events() always ends with a ToolRun
            raise AssertionError("the tool loop ended without a result")
        return result

    async def events(
        self,
        model: ToolCallingModel,
        prompt: Prompt | Sequence[Mapping[str, Any]],
        tools: Sequence[Tool],
        *,
        limits: ToolLimits | None = None,
        ctx: ToolContext | None = None,
    ) -> AsyncGenerator[ToolCallStarted | ToolCallFinished | ToolRun, None]:
        limits = limits or self.limits
        ctx = ctx or ToolContext()
        by_name = {tool.name: tool for tool in tools}
        if len(by_name) != len(tools):
            raise ValueError("tool names must be unique")
        specs = [openai_tool(tool) for tool in tools]
        messages = _initial_messages(model, prompt)
        n_hits = len(prompt.hits) if isinstance(prompt, Prompt) else 0
        deadline = anyio.current_time() + limits.deadline_s
        records: list[ToolRecord] = []
        usage: dict[str, int] = {}
        steps = 0
        stopped: StopReason = "max_steps"
        text = ""

        while True:
            tools_allowed = bool(specs) and steps < limits.max_steps
            choice = "auto" if tools_allowed else ("none" if specs else None)
            message = await self._complete(model, messages, specs, choice, deadline, limits, usage)
            steps += 1
            calls = _tool_calls(message) if tools_allowed else []
            text = _content(message)
            if not calls:
                stopped = "answered" if tools_allowed or steps == 1 else "max_steps"
                if not text and stopped == "max_steps":
                    text = _GAVE_UP
                break
            messages.append(_assistant_message(text, calls))
            for index, call in enumerate(calls):
                yield ToolCallStarted(steps, call.id, call.name, call.arguments)
                if index >= limits.max_calls_per_step:
                    record = _record(
                        steps,
                        call,
                        _error(f"at most {limits.max_calls_per_step} tool calls per turn"),
                        "skipped",
                        0.0,
                    )
                else:
                    record = await self._call(call, by_name, ctx, steps, deadline, limits)
                records.append(record)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": record.result})
                yield ToolCallFinished(record)

        reply = Reply(text, cited=cited_indexes(text, n_hits), usage=dict(usage))
        yield ToolRun(reply, tuple(records), tuple(messages), steps, stopped, dict(usage))

    async def _complete(
        self,
        model: ToolCallingModel,
        messages: list[dict[str, Any]],
        specs: list[dict[str, Any]],
        choice: str | None,
        deadline: float,
        limits: ToolLimits,
        usage: dict[str, int],
    ) -> Mapping[str, Any]:
        remaining = deadline - anyio.current_time()
        try:
            with anyio.fail_after(max(remaining, 0.0)):
                if remaining <= 0:
                    await anyio.sleep(0)  # let fail_after raise: the deadline has passed
                if specs:
                    completion = await model.complete(messages, tools=specs, tool_choice=choice)
                else:
                    completion = await model.complete(messages)
        except TimeoutError:
            raise UpstreamTimeout(
                f"the tool loop did not finish within {limits.deadline_s:g} s"
            ) from None
        for key, value in (completion.get("usage") or {}).items():
            if type(value) is int:
                usage[key] = usage.get(key, 0) + value
        message = completion.get("message")
        if not isinstance(message, Mapping):
            raise UpstreamError("the LLM returned a malformed response")
        return message

    async def _call(
        self,
        call: _Call,
        by_name: Mapping[str, Tool],
        ctx: ToolContext,
        step: int,
        deadline: float,
        limits: ToolLimits,
    ) -> ToolRecord:
        tool = by_name.get(call.name)
        started = time.perf_counter()
        outcome: Outcome
        if tool is None:
            known = ", ".join(sorted(by_name)) or "none"
            result = _error(f"there is no tool {call.name[:64]!r}; the tools are: {known}")
            outcome = "unknown_tool"
        else:
            try:
                args = check_arguments(tool.parameters, call.arguments)
            except ToolError as exc:
                result, outcome = _error(f"invalid arguments: {exc}"), "invalid_arguments"
            else:
                result, outcome = await self._invoke(tool, args, ctx, deadline, limits)
        duration = time.perf_counter() - started
        label = tool.name if tool is not None else "unknown"
        TOOL_CALLS.labels(label, outcome).inc()
        TOOL_CALL_SECONDS.labels(label).observe(duration)
        logger.info(
            "tool call",
            extra={
                "tool": label,
                "outcome": outcome,
                "duration_s": round(duration, 6),
                "step": step,
            },
        )
        return _record(step, call, _truncate(result, limits.max_result_chars), outcome, duration)

    async def _invoke(
        self,
        tool: Tool,
        args: dict[str, Any],
        ctx: ToolContext,
        deadline: float,
        limits: ToolLimits,
    ) -> tuple[str, Outcome]:
        budget = min(limits.tool_timeout_s, deadline - anyio.current_time())
        if budget <= 0:
            return _error("no time left for tool calls in this turn"), "timeout"
        try:
            with anyio.move_on_after(budget) as scope:
                value = await tool.call(args, ctx)
            if scope.cancelled_caught:
                return _error(f"the tool did not finish within {budget:.3g} s"), "timeout"
        except ToolError as exc:
            return _error(str(exc)), "error"
        except RagtideError as exc:
            return _error(exc.message), "error"
        except Exception:
            logger.warning("tool failed", extra={"tool": tool.name}, exc_info=True)
            return _error("the tool failed unexpectedly"), "error"
        return _render(value), "ok"


def _initial_messages(
    model: ToolCallingModel, prompt: Prompt | Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    if not isinstance(prompt, Prompt):
        return [dict(m) for m in prompt]
    render = getattr(model, "messages", None)  # the model's own prompt settings, if any
    if callable(render):
        return [dict(m) for m in render(prompt)]
    return [dict(m) for m in build_messages(prompt)]


def _tool_calls(message: Mapping[str, Any]) -> list[_Call]:
    raw = message.get("tool_calls") or []
    if not isinstance(raw, list):
        raise UpstreamError("the LLM returned malformed tool calls")
    calls = []
    for item in raw:
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise UpstreamError("the LLM returned malformed tool calls")
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):  # some servers send an object, not its JSON text
            arguments = json.dumps(arguments)
        call_id = item.get("id")
        calls.append(
            _Call(
                call_id if isinstance(call_id, str) and call_id else f"call_{uuid.uuid4().hex}",
                function["name"],
                arguments if isinstance(arguments, str) else "",
            )
        )
    return calls


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if not isinstance(content, str):
        raise UpstreamError("the LLM returned a malformed response")
    return content


def _assistant_message(text: str, calls: Sequence[_Call]) -> dict[str, Any]:
    return {
        "role": "assistant",
        # A string even when empty: OpenAI allows null here, but llama-cpp-python's
        # request schema (and its chat templates) need a string.
        "content": text,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ],
    }


def _record(step: int, call: _Call, result: str, outcome: Outcome, duration: float) -> ToolRecord:
    return ToolRecord(step, call.id, call.name, call.arguments, result, outcome, duration)


def _error(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


def _render(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 12] + " [truncated]"
