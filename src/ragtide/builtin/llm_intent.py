"""Follow-ups rewritten into standalone questions by an LLM, with the rules as the safety net.

``LLMRewriteIntentDetector`` (intent ``llm``) asks an OpenAI-compatible chat model to turn
a question that leans on the conversation ("and its default?") into one that stands alone
("What is the default of the PodDisruptionBudget's maxUnavailable?"), which retrieves far
better than the rule condenser's bag of key words. The rules still decide first:

- social turns and questions without history never reach the model;
- with ``rewrite: follow_ups`` (default) only questions the rules find leaning on the
  history do; with ``rewrite: questions`` every question that has earlier user turns does;
- the model gets ``deadline_s`` for the whole call. Past it, on any upstream error, or when
  its reply holds no usable question (no words, or longer than ``max_query_chars``), the
  turn goes on with the rule condenser's query, as if no model were configured.

So a slow or broken model server costs a turn at most ``deadline_s`` and never fails it.
Every outcome is counted in ``ragtide_intent_rewrites_total{outcome}``: ``rewritten``,
``timeout``, ``error`` or ``invalid``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from ragtide.builtin.intent import RuleIntentDetector
from ragtide.builtin.openai import OpenAIChatModel
from ragtide.errors import RagtideError, UpstreamTimeout
from ragtide.observability import INTENT_REWRITE_SECONDS, INTENT_REWRITES
from ragtide.text import words
from ragtide.types import ChatTurn, Intent

__all__ = ["REWRITE_INSTRUCTIONS", "LLMRewriteIntentDetector", "parse_rewrite"]

logger = logging.getLogger(__name__)

REWRITE_INSTRUCTIONS = (
    "Rewrite the user's last message as one standalone question that can be understood "
    "without the conversation: replace pronouns and references with what they refer to. "
    "Keep its meaning and language. Do not answer it. Reply with the question only."
)
# What small models put before or around the question they were asked for.
_LABEL = re.compile(
    r"^\s*(?:standalone question|rewritten question|question|rewrite|answer)\s*:\s*", re.I
)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"  # straight, curly and angle quotes


def _rewrite_config() -> OpenAIChatModel.Config:
    # A rewrite is short and has a deadline of its own: no retries, few tokens.
    return OpenAIChatModel.Config(max_tokens=64, max_retries=0, timeout_s=10.0)


class LLMRewriteIntentDetector:
    """The rule detector, whose follow-ups an LLM rewrites into standalone questions."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        llm: OpenAIChatModel.Config = Field(
            default_factory=_rewrite_config,
            description="The OpenAI-compatible server and model that rewrite (its system "
            "prompt, if set, replaces the rewrite instructions).",
        )
        rules: RuleIntentDetector.Config = Field(
            default_factory=RuleIntentDetector.Config,
            description="The rule detector: social turns, and the fallback query.",
        )
        rewrite: Literal["follow_ups", "questions"] = Field(
            default="follow_ups",
            description="follow_ups: only questions the rules find leaning on the history; "
            "questions: every question after an earlier user turn.",
        )
        deadline_s: float = Field(
            default=1.5, gt=0, le=30, description="The whole rewrite, retries included."
        )
        history_turns: int = Field(
            default=4, ge=1, le=20, description="Earlier turns (user and assistant) shown."
        )
        max_turn_chars: int = Field(
            default=400, ge=20, le=4000, description="Each earlier turn is cut to this."
        )
        max_query_chars: int = Field(
            default=300, ge=20, le=2000, description="A longer reply is not a question."
        )

    def __init__(self, config: Config | None = None) -> None:
        self._config = config or self.Config()
        self._rules = RuleIntentDetector(self._config.rules)
        self._llm = OpenAIChatModel(self._config.llm)

    async def start(self) -> None:
        await self._llm.start()

    async def aclose(self) -> None:
        await self._llm.aclose()

    async def detect(self, message: str, history: Sequence[ChatTurn]) -> Intent:
        fallback = self._rules.classify(message, history)
        if not self._wants_rewrite(fallback, history):
            return fallback
        outcome, query = await self._rewrite(message, history)
        INTENT_REWRITES.labels(outcome).inc()
        if query is None:
            return fallback
        return Intent("question", query, condensed=True)

    def _wants_rewrite(self, intent: Intent, history: Sequence[ChatTurn]) -> bool:
        if intent.kind != "question" or not intent.needs_retrieval:
            return False
        if self._config.rewrite == "follow_ups":
            return intent.condensed
        return any(turn.role == "user" for turn in history)

    async def _rewrite(self, message: str, history: Sequence[ChatTurn]) -> tuple[str, str | None]:
        """(outcome, the standalone question or None)."""
        began = time.perf_counter()
        reply: str | None = None
        outcome = "timeout"
        with anyio.move_on_after(self._config.deadline_s):
            try:
                completion = await self._llm.complete(
                    self.messages(message, history), temperature=0.0
                )
            except RagtideError as exc:
                outcome = "timeout" if isinstance(exc, UpstreamTimeout) else "error"
                logger.warning("follow-up rewrite failed", extra={"error": exc.code})
            else:
                content = completion["message"].get("content")
                reply = content if isinstance(content, str) else ""
                outcome = "invalid"
        INTENT_REWRITE_SECONDS.observe(time.perf_counter() - began)
        if reply is None:
            if outcome == "timeout":
                logger.warning(
                    "follow-up rewrite too slow", extra={"deadline_s": self._config.deadline_s}
                )
            return outcome, None
        query = parse_rewrite(reply, self._config.max_query_chars)
        return ("rewritten", query) if query is not None else (outcome, None)

    def messages(self, message: str, history: Sequence[ChatTurn]) -> list[dict[str, str]]:
        """The chat messages that ask for the rewrite: the instructions, then the recent
        conversation and the last message as one user message (small models follow one
        message better than a replayed dialogue they might continue)."""
        cut = self._config.max_turn_chars
        lines = []
        for turn in [t for t in history if t.role in ("user", "assistant")][
            -self._config.history_turns :
        ]:
            text = " ".join(turn.content.split())
            if len(text) > cut:
                text = text[: cut - 1].rstrip() + "…"
            lines.append(f"{'User' if turn.role == 'user' else 'Assistant'}: {text}")
        conversation = "\n".join(lines)
        user = (
            f"Conversation:\n{conversation}\n\nLast message: {' '.join(message.split())}\n\n"
            "Standalone question:"
        )
        system = self._config.llm.system_prompt or REWRITE_INSTRUCTIONS
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_rewrite(reply: str, max_chars: int) -> str | None:
    """The question in a model's ``reply``, or None when it holds no usable one: its first
    non-empty line without a label ("Standalone question:") or the quotes around it, with at
    least one word and at most ``max_chars`` characters."""
    line = next((ln for ln in reply.splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line).strip()
    if len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
        line = line[1:-1].strip()
    if not words(line) or len(line) > max_chars:
        return None
    return line
