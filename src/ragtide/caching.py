"""Answer-cache keys: the same standalone question about unchanged documents, once.

A key is a pure function of the namespace's cache generation, the condensed query and
a fingerprint of every setting that shapes an answer. Read the generation *before*
computing an answer and store the answer under that key: an answer computed while the
documents changed is then filed under the old generation and never served.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

from ragtide.components import AnswerCache

__all__ = ["cache_key", "lookup", "normalise_query"]


def _is_edge_noise(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


def normalise_query(query: str) -> str:
    """Casefold, drop punctuation and spaces at both ends, collapse inner whitespace."""
    text = unicodedata.normalize("NFKC", query).casefold()
    start, end = 0, len(text)
    while start < end and _is_edge_noise(text[start]):
        start += 1
    while end > start and _is_edge_noise(text[end - 1]):
        end -= 1
    return " ".join(text[start:end].split())


def cache_key(
    namespace_generation: str | int, condensed_query: str, settings_fingerprint: str
) -> str:
    """A sha256 hex digest; equal for questions that differ only in case, spacing or end
    punctuation, different for another generation or fingerprint."""
    parts = [str(namespace_generation), normalise_query(condensed_query), settings_fingerprint]
    encoded = json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


async def lookup(
    cache: AnswerCache, namespace: str, condensed_query: str, settings_fingerprint: str
) -> tuple[str, dict[str, Any] | None]:
    """Read the generation, build the key and get it: ``(key, value or None)``."""
    generation = await cache.generation(namespace)
    key = cache_key(generation, condensed_query, settings_fingerprint)
    return key, await cache.get(namespace, key)
