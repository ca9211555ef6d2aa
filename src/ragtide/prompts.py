"""Prompting helpers for LLM chat models: pure functions, no I/O.

``build_messages`` renders a ``Prompt`` in the OpenAI chat format with the retrieved hits
as numbered sources; ``cited_indexes`` reads the ``[n]`` markers back out of an answer;
``condense_messages`` asks an LLM to rewrite a follow-up as a standalone question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ragtide.types import ChatTurn, Hit, Prompt

__all__ = [
    "DEFAULT_SYSTEM",
    "build_messages",
    "cited_indexes",
    "condense_messages",
    "render_sources",
    "strip_citations",
]

DEFAULT_SYSTEM = (
    "You are a helpful assistant that answers questions using only the numbered sources "
    "below. Cite every statement you take from a source with its number in square "
    "brackets, like [1] or [1, 3]. If the sources do not contain the answer, say plainly "
    "that the documents do not contain it; never make up an answer or cite a source that "
    "does not support it. Answer concisely, in the language of the question."
)

_CONDENSE_SYSTEM = (
    "Rewrite the user's last message as a single standalone question that can be "
    "understood without the conversation, resolving pronouns and references from the "
    "earlier turns. Keep the user's language and wording where possible. If the message "
    "already stands alone, return it unchanged. Reply with the question only."
)

_NO_SOURCES = "No sources were found for this message."
# "[2]", "[1, 3]", "[1,2,3]"; the numbers themselves are parsed by _NUMBER.
_MARKER = re.compile(r"\[\s*(\d{1,4}(?:\s*[,;]\s*\d{1,4})*)\s*\]")
_NUMBER = re.compile(r"\d+")
_SPACED_MARKER = re.compile(r"[ \t]*" + _MARKER.pattern)
_MIN_SOURCE_CHARS = 200  # a source cut shorter than this is dropped rather than kept


def build_messages(
    prompt: Prompt,
    *,
    system: str | None = None,
    max_context_chars: int = 12000,
    max_history_turns: int = 6,
) -> list[dict[str, str]]:
    """The chat messages for ``prompt``: instructions and sources, recent history, the message.

    Sources keep their 1-based position in ``prompt.hits`` as their number, so ``[n]`` in
    the answer always means ``prompt.hits[n - 1]``; sources that do not fit in
    ``max_context_chars`` are cut at a word boundary or left out, starting from the last.
    Citation markers are removed from earlier assistant turns because their numbers
    referred to the sources of those turns, not to these.
    """
    instructions = DEFAULT_SYSTEM if system is None else system
    sources = render_sources(prompt.hits, max_chars=max_context_chars)
    messages = [{"role": "system", "content": f"{instructions}\n\nSources:\n{sources}"}]
    for turn in _recent(prompt.history, max_history_turns):
        content = strip_citations(turn.content) if turn.role == "assistant" else turn.content
        messages.append({"role": turn.role, "content": content})
    messages.append({"role": "user", "content": prompt.message})
    return messages


def render_sources(hits: Sequence[Hit], *, max_chars: int = 12000) -> str:
    """Hits as ``[n] title — text`` blocks, within ``max_chars`` characters in total."""
    blocks: list[str] = []
    budget = max_chars
    for n, hit in enumerate(hits, start=1):
        head = f"[{n}] {hit.chunk.title} — " if hit.chunk.title else f"[{n}] "
        text = " ".join(hit.chunk.text.split())
        room = budget - len(head) - 2  # two characters for the blank line between blocks
        if room < len(text):
            if room < _MIN_SOURCE_CHARS:
                break
            text = text[:room].rsplit(None, 1)[0] + " …"
        blocks.append(head + text)
        budget -= len(blocks[-1]) + 2
    return "\n\n".join(blocks) if blocks else _NO_SOURCES


def condense_messages(
    message: str, history: Sequence[ChatTurn], *, max_history_turns: int = 6
) -> list[dict[str, str]]:
    """Messages asking an LLM to turn ``message`` into a standalone question."""
    lines = [
        f"{'User' if turn.role == 'user' else 'Assistant'}: "
        + " ".join(strip_citations(turn.content).split())
        for turn in _recent(history, max_history_turns)
    ]
    transcript = "\n".join(lines) if lines else "(no earlier turns)"
    user = f"Conversation:\n{transcript}\n\nLast message: {message}\n\nStandalone question:"
    return [
        {"role": "system", "content": _CONDENSE_SYSTEM},
        {"role": "user", "content": user},
    ]


def cited_indexes(text: str, n_hits: int) -> tuple[int, ...]:
    """The 1-based source numbers cited in ``text`` as ``[n]`` or ``[n, m]``.

    In order of first citation, without duplicates; numbers outside ``1..n_hits`` are
    ignored, since they cannot name a source.
    """
    seen: dict[int, None] = {}
    for marker in _MARKER.finditer(text):
        for number in _NUMBER.findall(marker.group(1)):
            n = int(number)
            if 1 <= n <= n_hits:
                seen.setdefault(n)
    return tuple(seen)


def strip_citations(text: str) -> str:
    """``text`` without ``[n]`` markers (and the space before them)."""
    return _SPACED_MARKER.sub("", text)


def _recent(history: Sequence[ChatTurn], limit: int) -> Sequence[ChatTurn]:
    return history[-limit:] if limit > 0 else ()
