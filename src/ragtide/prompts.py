"""Prompting helpers for LLM chat models: pure functions, no I/O.

``build_messages`` renders a ``Prompt`` in the OpenAI chat format with the retrieved hits
as numbered sources, best first, packed into the model's context window when it is known
(``max_context_tokens``, counted with ``estimate_tokens``, a deliberately high estimate);
``distinct_hits`` drops repeated passages before they are numbered; ``cited_indexes``
reads the ``[n]`` markers back out of an answer; ``condense_messages`` asks an LLM to
rewrite a follow-up as a standalone question.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ragtide.types import ChatTurn, Hit, Prompt

__all__ = [
    "DEFAULT_SYSTEM",
    "MESSAGE_OVERHEAD_TOKENS",
    "build_messages",
    "cited_indexes",
    "condense_messages",
    "distinct_hits",
    "estimate_tokens",
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
_MIN_SOURCE_TOKENS = 80  # room for at least a short source, or history turns give way
# What a chat template adds around one message (role markers, separators): generous.
MESSAGE_OVERHEAD_TOKENS = 8
_SINGLE = re.compile(r"[!-/:-@\[-`{-~0-9]")  # ASCII digits and punctuation
_SPACES = re.compile(r"\s+")


def estimate_tokens(text: str) -> int:
    """A safe (high) estimate of the tokens ``text`` takes in a BPE tokenizer.

    One token per digit (many tokenizers split numbers into digits), per punctuation
    mark (code and markup are mostly single-character tokens) and per UTF-8 byte outside
    ASCII (a byte-level tokenizer trained mostly on English, like SmolLM2's, may spend a
    token on each), and one per three bytes of the rest: English prose runs at about
    four characters a token. It overestimates rather than overflows: checked against
    SmolLM2's own tokenizer in the model server tests.
    """
    singles = len(_SINGLE.findall(text))
    size = len(text.encode("utf-8"))
    ascii_rest = len(text.encode("ascii", "ignore")) - singles
    return singles + (size - singles - ascii_rest) + math.ceil(max(ascii_rest, 0) / 3)


def distinct_hits(hits: Sequence[Hit]) -> list[Hit]:
    """``hits`` best first (by score, stable) without repeats: a chunk seen before, or a
    passage whose text (whitespace and case aside) is already in a better one."""
    out: list[Hit] = []
    seen_ids: set[str] = set()
    texts: list[str] = []
    for hit in sorted(hits, key=lambda h: -h.score):
        text = _SPACES.sub(" ", hit.chunk.text).strip().lower()
        if hit.chunk.id in seen_ids or any(text in other for other in texts):
            continue
        seen_ids.add(hit.chunk.id)
        texts.append(text)
        out.append(hit)
    return out


def build_messages(
    prompt: Prompt,
    *,
    system: str | None = None,
    max_context_chars: int = 12000,
    max_history_turns: int = 6,
    max_context_tokens: int | None = None,
    reserve_tokens: int = 0,
) -> list[dict[str, str]]:
    """The chat messages for ``prompt``: instructions and sources, recent history, the message.

    Sources keep their 1-based position in ``prompt.hits`` as their number, so ``[n]`` in
    the answer always means ``prompt.hits[n - 1]`` (the core passes hits best first and
    without repeats: ``distinct_hits``); sources that do not fit are cut at a word
    boundary or left out, starting from the last. They must fit in ``max_context_chars``
    and, when the model's context window is given (``max_context_tokens``), in what the
    window leaves after ``reserve_tokens`` (the answer's ``max_tokens``), the
    instructions, the history and the message, counted with ``estimate_tokens``; the
    oldest history turns go first when even the best source would not fit.
    Citation markers are removed from earlier assistant turns because their numbers
    referred to the sources of those turns, not to these.
    """
    instructions = DEFAULT_SYSTEM if system is None else system
    history = [
        {
            "role": turn.role,
            "content": strip_citations(turn.content) if turn.role == "assistant" else turn.content,
        }
        for turn in _recent(prompt.history, max_history_turns)
        if turn.role in ("user", "assistant")
    ]
    question = {"role": "user", "content": prompt.message}
    max_tokens: int | None = None
    if max_context_tokens is not None:
        fixed = estimate_tokens(f"{instructions}\n\nSources:\n") + 2 * MESSAGE_OVERHEAD_TOKENS
        fixed += estimate_tokens(prompt.message)
        max_tokens = max_context_tokens - reserve_tokens - fixed - _history_tokens(history)
        while history and prompt.hits and max_tokens < _MIN_SOURCE_TOKENS:
            max_tokens += _history_tokens(history[:1])
            history = history[1:]
    sources = render_sources(prompt.hits, max_chars=max_context_chars, max_tokens=max_tokens)
    return [
        {"role": "system", "content": f"{instructions}\n\nSources:\n{sources}"},
        *history,
        question,
    ]


def _history_tokens(messages: Sequence[dict[str, str]]) -> int:
    return sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def render_sources(
    hits: Sequence[Hit], *, max_chars: int = 12000, max_tokens: int | None = None
) -> str:
    """Hits as ``[n] title — text`` blocks, within ``max_chars`` characters and (when
    given) ``max_tokens`` estimated tokens in total."""
    blocks: list[str] = []
    budget = max_chars
    tokens = max_tokens
    for n, hit in enumerate(hits, start=1):
        head = f"[{n}] {hit.chunk.title} — " if hit.chunk.title else f"[{n}] "
        text = " ".join(hit.chunk.text.split())
        room = budget - len(head) - 2  # two characters for the blank line between blocks
        if tokens is not None:  # a token costs at least one character: cut to the tokens
            room = min(room, _chars_within(text, tokens - estimate_tokens(head) - 1))
        if room < len(text):
            if room < _MIN_SOURCE_CHARS:
                break
            text = text[:room].rsplit(None, 1)[0] + " …"
        blocks.append(head + text)
        budget -= len(blocks[-1]) + 2
        if tokens is not None:
            tokens -= estimate_tokens(blocks[-1]) + 1
    return "\n\n".join(blocks) if blocks else _NO_SOURCES


def _chars_within(text: str, tokens: int) -> int:
    """The longest prefix of ``text`` (in characters) whose estimate is within ``tokens``
    (with one token left for the "…" a cut adds)."""
    if tokens <= 1:
        return 0
    if estimate_tokens(text) <= tokens:
        return len(text)
    low, high = 0, len(text)
    while low < high:  # binary search: the estimate grows with the prefix
        mid = (low + high + 1) // 2
        if estimate_tokens(text[:mid]) <= tokens - 1:
            low = mid
        else:
            high = mid - 1
    return low


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
