"""Answer quality of the default pipeline on SQuAD: token F1 and citations on the v1.1
subset (every question answerable), answering and declining on the v2.0 articles the
answerability model never saw (``ragtide.bench.answers``)."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path
from typing import Any

from ragtide import chat
from ragtide.bench.data import read_jsonl
from ragtide.bench.metrics import exact_match, token_f1
from ragtide.bench.quality import ingest_corpus
from ragtide.settings import Settings

__all__ = ["evaluate_squad"]

_MARKERS = re.compile(r"\s*\[\d+(?:,\s*\d+)*\]")


async def evaluate_squad(
    data: Path, work_dir: Path, limit: int | None = None, v2: bool = True
) -> dict[str, Any]:
    """The v1.1 numbers, plus the v2.0 held-out numbers and curve under ``squad_v2``."""
    result = await _evaluate_v1(data, work_dir, limit)
    if v2:
        from ragtide.bench.answers import evaluate_v2

        result["squad_v2"] = await evaluate_v2(data, work_dir, cross=False)
    return result


async def _evaluate_v1(data: Path, work_dir: Path, limit: int | None) -> dict[str, Any]:
    squad = data / "squad-dev-13art"
    settings = Settings(data_dir=work_dir / "squad", logging={"level": "WARNING"})
    rt, ingest = await ingest_corpus(settings, squad / "corpus.jsonl", "squad")
    f1s, ems, first_hit, any_hit, retrieved, answered, times = [], [], [], [], [], [], []
    try:
        questions = list(read_jsonl(squad / "qa.jsonl"))[:limit]
        for qa in questions:
            gold_ids = set(qa["context_ids"])
            began = time.perf_counter()
            answer = await chat.answer(rt, "squad", qa["question"])
            times.append(time.perf_counter() - began)
            text = _MARKERS.sub("", answer.text).strip()
            f1s.append(token_f1(text, qa["answers"]))
            ems.append(exact_match(text, qa["answers"]))
            cited = [c.document_id for c in answer.citations]
            answered.append(bool(cited))
            first_hit.append(bool(cited) and cited[0] in gold_ids)
            any_hit.append(bool(gold_ids & set(cited)))
            hits = await chat.search(rt, "squad", qa["question"], 5)
            retrieved.append(bool(gold_ids & {h.document_id for h in hits}))
    finally:
        await rt.aclose()
    n = len(f1s)
    times.sort()
    return {
        "dataset": "squad-dev-13art",
        "questions": n,
        "ingest": ingest,
        "token_f1": round(sum(f1s) / n, 4),
        "exact_match": round(sum(ems) / n, 4),
        "citation_hit_rate_first": round(sum(first_hit) / n, 4),
        "citation_hit_rate_any": round(sum(any_hit) / n, 4),
        "answered_with_citation": round(sum(answered) / n, 4),
        "declined": round(1 - sum(answered) / n, 4),
        "retrieval_recall@5": round(sum(retrieved) / n, 4),
        "answer_ms_p50": round(statistics.median(times) * 1000, 3),
        "answer_ms_p99": round(times[int(0.99 * (n - 1))] * 1000, 3),
    }
