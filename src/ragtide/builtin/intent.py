"""Rule-based intent detection: social turns, and follow-ups condensed from the history.

``RuleIntentDetector`` needs no model and runs in microseconds. It recognises greetings,
thanks and farewells (which need no retrieval) and treats everything else as a question.
A question that leans on the conversation ("and what about its limits?", "why?") is
condensed into a standalone keyword query: the key words of the recent user questions
followed by the new words of the message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragtide.text import content_words, words
from ragtide.types import ChatTurn, Intent, IntentKind

__all__ = ["RuleIntentDetector"]

_GREETINGS = (
    "hi", "hello", "hey", "hiya", "howdy", "greetings", "yo", "good morning",
    "good afternoon", "good evening", "good day", "morning", "hi there", "hello there",
    "hey there", "how are you", "how are you doing", "how's it going", "what's up",
)  # fmt: skip
_THANKS = (
    "thanks", "thank you", "thx", "ty", "cheers", "many thanks", "thanks a lot",
    "much appreciated", "appreciate it", "i appreciate it", "ok", "okay", "great",
    "cool", "perfect", "awesome", "nice", "got it", "understood",
)  # fmt: skip
_FAREWELLS = (
    "bye", "goodbye", "good bye", "bye bye", "farewell", "see you", "see ya",
    "see you later", "see you soon", "take care", "good night", "later", "cya",
    "have a nice day", "have a good day",
)  # fmt: skip
# A social message may carry these around its phrases ("hi there all", "thanks so much").
_FILLERS = frozenset(
    """all everyone everybody folks team friend bot assistant again so much very a lot
    really you for the your help that's it that oh well now then just and"""
    .split()
)  # fmt: skip
# After "hi" or "thanks" without punctuation, these show that a question follows.
_STOP_OR_OPENER = frozenset(
    """and but also or so what why how when where who which is are can could do does
    did i we my our please tell""".split()
)
_PRIORITY: dict[IntentKind, int] = {"greeting": 1, "thanks": 2, "farewell": 3, "question": 0}

# Openers that continue the previous question rather than start a new one.
_OPENERS = tuple(
    tuple(o.split())
    for o in (
        "and", "but", "also", "or", "plus", "what about", "how about", "what else",
        "same for", "the same", "as for", "which one", "which ones", "in that case",
    )
)  # fmt: skip
_OPENERS_BY_FIRST: dict[str, tuple[tuple[str, ...], ...]] = {
    first: tuple(o for o in _OPENERS if o[0] == first) for first in {o[0] for o in _OPENERS}
}
_ANAPHORS = frozenset(
    """it its itself they them their theirs themselves this these those he him his she
    her hers former latter""".split()
)
_IT_DUMMY_NEXT = frozenset(
    """possible necessary ok okay safe true better best recommended worth normal common
    hard easy advisable required mandatory allowed important enough""".split()
)
_THAT_ANAPHORIC_AFTER = frozenset(
    """is was does do did about of for with on in to use mean means like by from than
    after before explain and but or""".split()
)
_BE = frozenset("is are was were be been being will can could might should would".split())
_WH = frozenset("what why how when where who whom which".split())
# Content words that carry no topic: they are left out of condensed queries.
_NOISE = frozenset(
    """explain tell describe define definition mean means meaning please know want need
    like get show give example examples more detail details info information elaborate
    thing things something anything else also really ok okay one ones same let let's several various
    it's that's what's there's here's i'm i'd i've you're don't doesn't isn't aren't
    can't won't didn't how's where's who's when's why's hi hello hey thanks""".split()
)  # fmt: skip


class RuleIntentDetector:
    """Keyword rules for social turns plus history-based condensing of follow-up questions."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        history_turns: int = Field(
            default=2, ge=0, le=20, description="How many earlier user questions to consult."
        )
        max_topic_words: int = Field(
            default=8, ge=1, le=32, description="Most key words carried over from the history."
        )
        greetings: tuple[str, ...] = Field(default=(), description="Extra greeting phrases.")
        thanks: tuple[str, ...] = Field(default=(), description="Extra thanks phrases.")
        farewells: tuple[str, ...] = Field(default=(), description="Extra farewell phrases.")

        @field_validator("greetings", "thanks", "farewells")
        @classmethod
        def _has_words(cls, phrases: tuple[str, ...]) -> tuple[str, ...]:
            for phrase in phrases:
                if not words(phrase):
                    raise ValueError(f"phrase {phrase!r} contains no words")
            return phrases

    def __init__(self, config: Config | None = None) -> None:
        self._config = config or self.Config()
        tables: tuple[tuple[IntentKind, Iterable[str]], ...] = (
            ("greeting", (*_GREETINGS, *self._config.greetings)),
            ("thanks", (*_THANKS, *self._config.thanks)),
            ("farewell", (*_FAREWELLS, *self._config.farewells)),
        )
        self._phrases: dict[tuple[str, ...], IntentKind] = {
            tuple(words(phrase)): kind for kind, phrases in tables for phrase in phrases
        }
        self._longest = max(len(p) for p in self._phrases)

    async def detect(self, message: str, history: Sequence[ChatTurn]) -> Intent:
        return self.classify(message, history)

    def classify(self, message: str, history: Sequence[ChatTurn]) -> Intent:
        """The synchronous core of ``detect``."""
        kind, text, tokens = self._parse(message)
        if kind != "question":
            return Intent(kind, message.strip(), needs_retrieval=False)
        if not tokens:
            return Intent("question", "", needs_retrieval=False)
        topic = self._topic(history)
        if not topic or not _leans_on_history(tokens):
            return Intent("question", text.strip())
        return Intent("question", " ".join(_condense(tokens, topic)), condensed=True)

    def _parse(self, message: str) -> tuple[IntentKind, str, list[str]]:
        """The kind of ``message``; for a question also its text and tokens without a
        leading "hi," or "thanks," that stands apart from the rest."""
        tokens = words(message)
        kind: IntentKind = "question"
        i = prefix = 0
        while i < len(tokens):
            phrase = self._match(tokens, i)
            if phrase:
                kind = max(kind, self._phrases[phrase], key=_PRIORITY.__getitem__)
                i = prefix = i + len(phrase)
            elif tokens[i] in _FILLERS and kind != "question":
                i += 1
            else:
                break
        if kind != "question" and i == len(tokens):
            return kind, message, tokens
        if not prefix:
            return "question", message, tokens
        rest = _after_tokens(message, tokens[:prefix])
        # "Great Barrier Reef" and "Morning shift times" keep their first word.
        stands_apart = len(rest) < len(_after_tokens(message, tokens[:prefix], strip=" \t\n"))
        if stands_apart or tokens[prefix] in _STOP_OR_OPENER:
            return "question", rest, tokens[prefix:]
        return "question", message, tokens

    def _match(self, tokens: list[str], start: int) -> tuple[str, ...] | None:
        for size in range(min(self._longest, len(tokens) - start), 0, -1):
            candidate = tuple(tokens[start : start + size])
            if candidate in self._phrases:
                return candidate
        return None

    def _topic(self, history: Sequence[ChatTurn]) -> list[str]:
        """Key words of the recent user questions, each follow-up merged into the one before."""
        if self._config.history_turns == 0:
            return []
        questions: list[list[str]] = []
        for turn in reversed(history):
            if turn.role != "user":
                continue
            kind, _, tokens = self._parse(turn.content)
            if kind == "question" and tokens:
                questions.append(tokens)
                if len(questions) == self._config.history_turns:
                    break
        topic: list[str] = []
        for tokens in reversed(questions):
            key = _key_words(tokens)
            topic = _dedup([*topic, *key]) if topic and _leans_on_history(tokens) else key
            topic = topic[: self._config.max_topic_words]
        return topic


def _leans_on_history(tokens: list[str]) -> bool:
    """Whether a question needs the conversation to be understood."""
    if _opener(tokens):
        return True
    for i, token in enumerate(tokens):
        before = tokens[i - 1] if i else ""
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token in _ANAPHORS:
            if not (token == "it" and after in _IT_DUMMY_NEXT):
                return True
        elif token == "that":
            if not before or not after or before in _THAT_ANAPHORIC_AFTER:
                return True
        elif token == "there" and before not in _BE and after not in _BE:
            return True
    key = _key_words(tokens)
    return not key or (len(key) == 1 and len(tokens) <= 2)


def _condense(tokens: list[str], topic: list[str]) -> list[str]:
    """A standalone query: the question word, the topic, then the message's own key words."""
    rest = tokens
    while size := _opener(rest):  # "and what about ..." opens twice
        rest = rest[size:]
    lead = rest[:1] if rest and rest[0] in _WH else []
    return _dedup([*lead, *topic, *_key_words(tokens)])


def _opener(tokens: list[str]) -> int:
    """The length of the continuation opener that ``tokens`` start with, or 0."""
    for opener in _OPENERS_BY_FIRST.get(tokens[0], ()) if tokens else ():
        if tuple(tokens[: len(opener)]) == opener:
            return len(opener)
    return 0


def _key_words(tokens: list[str]) -> list[str]:
    return _dedup(w for w in content_words(" ".join(tokens)) if w not in _NOISE)


def _dedup(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _after_tokens(text: str, tokens: list[str], strip: str = " \t\n,.;:!?-\u2013\u2014") -> str:
    """``text`` after its first ``len(tokens)`` word tokens, without leading ``strip``."""
    lowered, position = text.lower(), 0
    for token in tokens:
        position = lowered.index(token, position) + len(token)
    return text[position:].lstrip(strip)
