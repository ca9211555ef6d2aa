"""Retrieval and answer-quality metrics (BEIR / SQuAD definitions)."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["exact_match", "mrr_at", "ndcg_at", "normalize_answer", "recall_at", "token_f1"]


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """nDCG@k with graded relevance, gain = rel (as pytrec_eval/BEIR compute it)."""
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(rel / math.log2(i + 2) for i, rel in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {d for d, rel in relevant.items() if rel > 0}
    return len(wanted & set(ranked[:k])) / len(wanted) if wanted else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for i, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, articles or extra spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def token_f1(prediction: str, gold: Iterable[str]) -> float:
    """Best token F1 of ``prediction`` against any gold answer."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for answer in gold:
        truth = normalize_answer(answer).split()
        common = Counter(pred) & Counter(truth)
        same = sum(common.values())
        if same == 0:
            continue
        precision, recall = same / len(pred), same / len(truth)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def exact_match(prediction: str, gold: Iterable[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in gold))
