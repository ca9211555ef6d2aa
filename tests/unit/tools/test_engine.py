"""The tool loop, driven by a scripted fake model."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from prometheus_client import REGISTRY

from ragtide.errors import Forbidden, UpstreamTimeout
from ragtide.tools import (
    Tool,
    ToolCallFinished,
    ToolCallingModel,
    ToolCallStarted,
    ToolContext,
    ToolEngine,
    ToolLimits,
    ToolRun,
)
from ragtide.tools.builtin import CalculatorTool, GetDocumentTool, SearchTool, TodayTool
from ragtide.types import Chunk, Hit, Intent, Prompt

Step = Mapping[str, Any] | Callable[[list[dict[str, Any]]], Mapping[str, Any]]


def call(name: str, arguments: Any, call_id: str | None = None) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": call_id or f"call_{name}",
        "type": "function",
        "function": {"name": name, "arguments": text},
    }


def calls(*tool_calls: dict[str, Any], usage: int = 1) -> dict[str, Any]:
    return {
        "message": {"role": "assistant", "content": None, "tool_calls": list(tool_calls)},
        "usage": {"prompt_tokens": 10 * usage, "completion_tokens": usage},
    }


def answer(text: str) -> dict[str, Any]:
    return {
        "message": {"role": "assistant", "content": text},
        "usage": {"prompt_tokens": 10, "completion_tokens": 2},
    }


class ScriptedModel:
    """Answers with the next step of its script; remembers what it was sent."""

    model_id = "scripted"

    def __init__(self, *script: Step, forever: Step | None = None) -> None:
        self.script = list(script)
        self.forever = forever
        self.requests: list[dict[str, Any]] = []

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        tool_choice: str | Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any]:
        sent = [dict(m) for m in messages]
        self.requests.append({"messages": sent, "tools": list(tools), "tool_choice": tool_choice})
        step = self.script.pop(0) if self.script else self.forever
        assert step is not None, "the script ran out"
        return step(sent) if callable(step) else step


class Echo:
    name = "echo"
    description = "Echo the text back."
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {"text": {"type": "string"}, "times": {"type": "integer", "minimum": 1}},
        "required": ["text"],
        "additionalProperties": False,
    }

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> str:
        return str(args["text"]) * int(args.get("times", 1))


class Broken:
    name = "broken"
    description = "Always fails."
    parameters: Mapping[str, Any] = {"type": "object", "properties": {}}

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> str:
        raise RuntimeError("secret internal detail")


class Hangs:
    name = "hangs"
    description = "Never returns."
    parameters: Mapping[str, Any] = {"type": "object", "properties": {}}

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> str:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def counted(tool: str, outcome: str) -> float:
    labels = {"tool": tool, "outcome": outcome}
    return REGISTRY.get_sample_value("ragtide_tool_calls_total", labels) or 0.0


def tool_messages(run: ToolRun) -> list[Mapping[str, Any]]:
    return [m for m in run.messages if m["role"] == "tool"]


def test_the_fake_and_the_tools_fit_the_protocols() -> None:
    assert isinstance(ScriptedModel(), ToolCallingModel)
    for tool in (Echo(), SearchTool(), GetDocumentTool(), CalculatorTool(), TodayTool()):
        assert isinstance(tool, Tool)


@pytest.mark.anyio
async def test_a_tool_call_and_its_result_go_back_to_the_model() -> None:
    model = ScriptedModel(
        calls(call("calculator", {"expression": "6 * 7"}, "c1")),
        answer("It is 42."),
    )
    before = counted("calculator", "ok")
    run = await ToolEngine().run(model, [{"role": "user", "content": "6*7?"}], [CalculatorTool()])
    assert run.reply.text == "It is 42."
    assert run.stopped == "answered" and run.steps == 2
    assert run.reply.usage == {"prompt_tokens": 20, "completion_tokens": 3}
    [record] = run.calls
    assert (record.name, record.call_id, record.outcome) == ("calculator", "c1", "ok")
    assert record.step == 1
    assert json.loads(record.result) == {"expression": "6 * 7", "result": "42"}
    assert record.duration_s >= 0
    assert counted("calculator", "ok") == before + 1
    # The wire format: tools offered with tool_choice auto; the second request carries the
    # assistant's tool call and the tool message answering it.
    first, second = model.requests
    assert first["tool_choice"] == "auto"
    assert first["tools"][0]["type"] == "function"
    assert first["tools"][0]["function"]["name"] == "calculator"
    assert first["tools"][0]["function"]["parameters"]["required"] == ["expression"]
    assistant, tool = second["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == "c1"
    assert tool == {"role": "tool", "tool_call_id": "c1", "content": record.result}


@pytest.mark.anyio
async def test_a_prompt_is_rendered_and_its_citations_read() -> None:
    chunk = Chunk(id="c1", document_id="d1", ordinal=0, text="Pods run containers.", title="P")
    prompt = Prompt("What is a Pod?", Intent("question", "What is a Pod?"), (), [Hit(chunk, 1.0)])
    model = ScriptedModel(answer("Pods run containers [1]."))
    run = await ToolEngine().run(model, prompt, [Echo()])
    assert run.reply.cited == (1,) and run.calls == ()
    system, user = model.requests[0]["messages"]
    assert "[1] P — Pods run containers." in system["content"]
    assert user == {"role": "user", "content": "What is a Pod?"}


@pytest.mark.anyio
async def test_a_model_that_calls_tools_forever_stops_at_max_steps() -> None:
    model = ScriptedModel(forever=calls(call("echo", {"text": "again"})))
    run = await ToolEngine(ToolLimits(max_steps=3)).run(model, [], [Echo()])
    assert run.stopped == "max_steps"
    assert len(run.calls) == 3 and [r.step for r in run.calls] == [1, 2, 3]
    assert run.steps == 4  # three tool turns, then one without tools
    assert [r["tool_choice"] for r in model.requests] == ["auto", "auto", "auto", "none"]
    assert run.reply.text  # a fixed "could not finish" rather than nothing


@pytest.mark.anyio
async def test_after_max_steps_the_model_may_still_answer() -> None:
    model = ScriptedModel(calls(call("echo", {"text": "x"})), answer("Done."))
    run = await ToolEngine(ToolLimits(max_steps=1)).run(model, [], [Echo()])
    assert (run.reply.text, run.stopped) == ("Done.", "max_steps")
    assert model.requests[-1]["tool_choice"] == "none"


@pytest.mark.anyio
async def test_a_tool_that_raises_becomes_an_error_result(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ragtide.tools.engine")
    model = ScriptedModel(calls(call("broken", {})), answer("Sorry."))
    before = counted("broken", "error")
    run = await ToolEngine().run(model, [], [Broken()])
    [record] = run.calls
    assert record.outcome == "error"
    assert json.loads(record.result) == {"error": "the tool failed unexpectedly"}
    assert "secret internal detail" not in record.result
    assert tool_messages(run)[0]["content"] == record.result
    assert run.reply.text == "Sorry."
    assert counted("broken", "error") == before + 1
    [logged] = [r for r in caplog.records if r.getMessage() == "tool call"]
    assert logged.__dict__["tool"] == "broken" and logged.__dict__["outcome"] == "error"
    assert logged.__dict__["duration_s"] >= 0


@pytest.mark.anyio
async def test_a_tool_that_hangs_times_out() -> None:
    model = ScriptedModel(calls(call("hangs", {}), call("echo", {"text": "ok"})), answer("Hm."))
    before = counted("hangs", "timeout")
    run = await ToolEngine(ToolLimits(tool_timeout_s=0.05)).run(model, [], [Hangs(), Echo()])
    hung, echoed = run.calls
    assert hung.outcome == "timeout" and "did not finish" in json.loads(hung.result)["error"]
    assert echoed.outcome == "ok" and echoed.result == "ok"  # the loop went on
    assert counted("hangs", "timeout") == before + 1


@pytest.mark.anyio
async def test_an_unknown_tool_is_an_error_result() -> None:
    model = ScriptedModel(calls(call("rm_rf", {"path": "/"})), answer("I cannot."))
    before = counted("unknown", "unknown_tool")
    run = await ToolEngine().run(model, [], [Echo(), CalculatorTool()])
    [record] = run.calls
    assert record.outcome == "unknown_tool"
    assert json.loads(record.result)["error"] == (
        "there is no tool 'rm_rf'; the tools are: calculator, echo"
    )
    assert counted("unknown", "unknown_tool") == before + 1  # a bounded label


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({}, "missing required argument(s): text"),
        ({"text": 3}, "'text' must be of type string"),
        ({"text": "a", "times": 0}, "'times' must be at least 1"),
        ({"text": "a", "times": "2"}, "'times' must be of type integer"),
        ({"text": "a", "rm": True}, "unknown argument(s): rm"),
    ],
)
async def test_invalid_arguments_are_error_results(arguments: Any, error: str) -> None:
    model = ScriptedModel(calls(call("echo", arguments)), answer("ok"))
    run = await ToolEngine().run(model, [], [Echo()])
    [record] = run.calls
    assert record.outcome == "invalid_arguments"
    assert error in json.loads(record.result)["error"]


@pytest.mark.anyio
async def test_calls_beyond_the_per_step_cap_are_answered_but_not_run() -> None:
    model = ScriptedModel(
        calls(*[call("echo", {"text": str(i)}, f"c{i}") for i in range(4)]), answer("ok")
    )
    run = await ToolEngine(ToolLimits(max_calls_per_step=2)).run(model, [], [Echo()])
    assert [r.outcome for r in run.calls] == ["ok", "ok", "skipped", "skipped"]
    # Every tool call of the assistant message has its tool message, as the API requires.
    assert [m["tool_call_id"] for m in tool_messages(run)] == ["c0", "c1", "c2", "c3"]


@pytest.mark.anyio
async def test_the_total_deadline_bounds_the_loop() -> None:
    class SlowModel(ScriptedModel):
        async def complete(self, messages: Any, **kwargs: Any) -> Mapping[str, Any]:
            if len(self.requests) >= 1:
                await anyio.sleep_forever()
            return await super().complete(messages, **kwargs)

    model = SlowModel(calls(call("echo", {"text": "x"})))
    with pytest.raises(UpstreamTimeout, match=r"within 0\.2 s"):
        await ToolEngine(ToolLimits(deadline_s=0.2)).run(model, [], [Echo()])


@pytest.mark.anyio
async def test_a_tool_gets_no_more_than_the_time_left() -> None:
    model = ScriptedModel(calls(call("hangs", {})), answer("late"))
    limits = ToolLimits(tool_timeout_s=60, deadline_s=0.3)
    with pytest.raises(UpstreamTimeout):  # the tool used it all: no time left to answer
        await ToolEngine(limits).run(model, [], [Hangs()])


@pytest.mark.anyio
async def test_events_show_each_call_as_it_happens() -> None:
    model = ScriptedModel(calls(call("echo", {"text": "hi"}, "c1")), answer("hi"))
    events = [e async for e in ToolEngine().events(model, [], [Echo()])]
    started, finished, run = events
    assert isinstance(started, ToolCallStarted) and started.call_id == "c1"
    assert started.arguments == '{"text": "hi"}'
    assert isinstance(finished, ToolCallFinished) and finished.record.result == "hi"
    assert isinstance(run, ToolRun) and run.reply.text == "hi"
    assert finished.record.as_dict()["name"] == "echo"


@pytest.mark.anyio
async def test_long_results_are_truncated() -> None:
    model = ScriptedModel(calls(call("echo", {"text": "x", "times": 10_000})), answer("ok"))
    run = await ToolEngine(ToolLimits(max_result_chars=100)).run(model, [], [Echo()])
    assert len(run.calls[0].result) == 100 and run.calls[0].result.endswith("[truncated]")


@pytest.mark.anyio
async def test_without_tools_the_model_is_called_once_without_tools() -> None:
    model = ScriptedModel(answer("plain"))
    run = await ToolEngine().run(model, [{"role": "user", "content": "hi"}], [])
    assert run.reply.text == "plain" and run.stopped == "answered"
    assert model.requests[0]["tools"] == [] and model.requests[0]["tool_choice"] is None


# --- the built-in tools ------------------------------------------------------------------


def hit(doc: str, text: str) -> Hit:
    return Hit(Chunk(id=f"{doc}#0", document_id=doc, ordinal=0, text=text, title=doc), 0.5)


@pytest.mark.anyio
async def test_search_uses_the_cores_scoped_search() -> None:
    asked: list[tuple[str | None, str, int]] = []

    async def search(namespace: str | None, query: str, top_k: int) -> list[Hit]:
        asked.append((namespace, query, top_k))
        if namespace == "secret":
            raise Forbidden("the credential may not read namespace 'secret'")
        return [hit("d1", "a" * 1000), hit("d2", "b")]

    ctx = ToolContext(namespace="kb", search=search)
    model = ScriptedModel(
        calls(
            call("search", {"query": "pods", "namespace": "handbook", "top_k": 1}, "s1"),
            call("search", {"query": "keys", "namespace": "secret"}, "s2"),
            call("search", {"query": "here"}, "s3"),
        ),
        answer("ok"),
    )
    tool = SearchTool(SearchTool.Config(max_chars_per_result=100))
    run = await ToolEngine().run(model, [], [tool], ctx=ctx)
    found, refused, here = run.calls
    assert asked == [("handbook", "pods", 1), ("secret", "keys", 5), (None, "here", 5)]
    result = json.loads(found.result)
    assert result["namespace"] == "handbook"
    assert [r["document_id"] for r in result["results"]] == ["d1"]
    assert len(result["results"][0]["text"]) == 100
    assert refused.outcome == "error" and "may not read" in refused.result
    assert json.loads(here.result)["namespace"] == "kb"


@pytest.mark.anyio
async def test_get_document_reports_a_missing_document() -> None:
    async def get_document(namespace: str | None, document_id: str) -> dict[str, Any] | None:
        return {"id": document_id, "title": "Pods"} if document_id == "d1" else None

    ctx = ToolContext(get_document=get_document)
    model = ScriptedModel(
        calls(
            call("get_document", {"document_id": "d1"}),
            call("get_document", {"document_id": "x"}),
        ),
        answer("ok"),
    )
    run = await ToolEngine().run(model, [], [GetDocumentTool()], ctx=ctx)
    found, missing = run.calls
    assert json.loads(found.result) == {"id": "d1", "title": "Pods"}
    assert json.loads(missing.result) == {"error": "there is no document 'x'"}


@pytest.mark.anyio
async def test_tools_without_their_core_callable_say_so() -> None:
    model = ScriptedModel(calls(call("search", {"query": "x"})), answer("ok"))
    run = await ToolEngine().run(model, [], [SearchTool()])
    assert run.calls[0].outcome == "error" and "not available" in run.calls[0].result


@pytest.mark.anyio
async def test_today_uses_the_contexts_clock_and_zone() -> None:
    ctx = ToolContext(now=lambda: datetime(2025, 3, 1, 23, 30, tzinfo=UTC))
    tool = TodayTool(TodayTool.Config(timezone="Europe/Berlin"))
    result = await tool.call({}, ctx)
    assert result == {
        "date": "2025-03-02",
        "weekday": "Sunday",
        "time": "00:30",
        "timezone": "Europe/Berlin",
    }


def test_today_refuses_an_unknown_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        TodayTool.Config(timezone="Mars/Olympus")


@pytest.mark.anyio
@pytest.mark.parametrize("expression", ["9**9**9", "__import__('os')", "10**400 + 1"])
async def test_the_calculator_tool_refuses_hostile_input(expression: str) -> None:
    model = ScriptedModel(calls(call("calculator", {"expression": expression})), answer("no"))
    run = await ToolEngine().run(model, [], [CalculatorTool()])
    assert run.calls[0].outcome == "error"
    assert "error" in json.loads(run.calls[0].result)


def test_the_built_ins_are_registered_as_plugins() -> None:
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group="ragtide.tools")}
    assert found == {
        "search": "ragtide.tools.builtin:SearchTool",
        "get_document": "ragtide.tools.builtin:GetDocumentTool",
        "calculator": "ragtide.tools.builtin:CalculatorTool",
        "today": "ragtide.tools.builtin:TodayTool",
    }
