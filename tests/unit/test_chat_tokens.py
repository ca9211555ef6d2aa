"""answer() counts the tokens the chat model reports in ``ragtide_llm_tokens_total``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import REGISTRY

from ragtide.chat import answer
from ragtide.ingest.pipeline import Ingestor
from ragtide.runtime import build_runtime
from ragtide.settings import Settings
from ragtide.types import Prompt, Reply

DOC = b"# Pods\n\nA Pod is the smallest deployable unit of computing in Kubernetes.\n"


class BilledModel:
    """A chat model that reports usage the way an OpenAI-compatible API does."""

    model_id = "billed"

    def __init__(self, usage: dict[str, int]) -> None:
        self.usage = usage

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def generate(self, prompt: Prompt) -> Reply:
        return Reply("A Pod is the smallest unit [1].", (1,), self.usage)

    async def stream(self, prompt: Prompt):  # type: ignore[no-untyped-def]
        yield "unused"


def _tokens(kind: str) -> float:
    labels = {"component": "extractive", "kind": kind}
    return REGISTRY.get_sample_value("ragtide_llm_tokens_total", labels) or 0.0


def test_answer_counts_prompt_and_completion_tokens(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        embedder={"use": "hashing"},
        answer_cache_enabled=False,
        logging={"format": "console", "access_log": False},
    )

    async def run() -> None:
        rt = build_runtime(settings)
        await rt.start()
        try:
            await Ingestor(rt).ingest_bytes("kb", "pods.md", DOC)
            rt.chat_model = BilledModel(  # type: ignore[assignment]
                {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
            )
            await answer(rt, "kb", "What is a Pod?")
            rt.chat_model = BilledModel({})  # type: ignore[assignment]
            await answer(rt, "kb", "What is a Pod exactly?")
        finally:
            await rt.aclose()

    before = {kind: _tokens(kind) for kind in ("prompt", "completion", "total")}
    asyncio.run(run())
    assert _tokens("prompt") - before["prompt"] == 42
    assert _tokens("completion") - before["completion"] == 7
    assert _tokens("total") == before["total"] == 0  # total is the sum: not a kind of its own


class StreamingBilledModel(BilledModel):
    """Streams, then exposes the usage the server reported at the end (as OpenAIStream)."""

    def __init__(self, usage: dict[str, int]) -> None:
        super().__init__(usage)
        self.prompts: list[Prompt] = []

    def stream(self, prompt: Prompt):  # type: ignore[no-untyped-def]
        self.prompts.append(prompt)
        model = self

        class Stream:
            def __init__(self) -> None:
                self.usage: dict[str, int] = {}

            def __aiter__(self):  # type: ignore[no-untyped-def]
                return self._pieces()

            async def _pieces(self):  # type: ignore[no-untyped-def]
                for piece in ("A Pod ", "is small [1]."):
                    yield piece
                self.usage = model.usage

        return Stream()


def test_streamed_usage_is_counted_and_options_reach_the_model(tmp_path: Path) -> None:
    from ragtide.chat import Done, stream_answer

    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        embedder={"use": "hashing"},
        answer_cache_enabled=False,
        logging={"format": "console", "access_log": False},
    )

    async def run() -> tuple[dict[str, int], StreamingBilledModel]:
        rt = build_runtime(settings)
        await rt.start()
        try:
            await Ingestor(rt).ingest_bytes("kb", "pods.md", DOC)
            model = StreamingBilledModel({"prompt_tokens": 11, "completion_tokens": 3})
            rt.chat_model = model  # type: ignore[assignment]
            events = await stream_answer(
                rt, "kb", "What is a Pod?", options={"max_tokens": 5, "temperature": 0.5}
            )
            done = [e async for e in events if isinstance(e, Done)]
            return dict(done[0].answer.usage), model
        finally:
            await rt.aclose()

    before = _tokens("completion")
    usage, model = asyncio.run(run())
    assert usage == {"prompt_tokens": 11, "completion_tokens": 3}
    assert _tokens("completion") == before + 3
    assert dict(model.prompts[0].options) == {"max_tokens": 5, "temperature": 0.5}
