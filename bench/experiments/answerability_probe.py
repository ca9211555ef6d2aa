"""How far can the answerability decision go on features alone? A probe, not a component.

    .venv/bin/pip install scikit-learn      # only for this probe; not a Ragtide dependency
    .venv/bin/python bench/experiments/answerability_probe.py [--data DIR] [--out FILE]

The shipped decision (``ragtide.support``) is two logistic regressions over lexical
features. This probe asks whether a stronger learner or more features would reach the
"Answers without an LLM" floors (unanswerable declined >= 0.60 while answerable questions
answered citing the gold paragraph >= 0.75 and holding a gold answer >= 0.75), on the same
split the shipped model uses: trained on seven articles of ``squad-v2-dev-10art``,
reported on the three it never saw (``ragtide.bench.answers.HELD_OUT``).

Per variant it reports, on the held-out questions, the ROC AUC of the answer score for
"answerable" and for "answering with the best sentence is right" against "unanswerable",
and the largest share of unanswerable questions declined at any threshold that keeps both
answerable floors (``None``: no threshold keeps them). "Right" is the label the shipped
model trains on: the best sentence is in a gold paragraph and holds a gold answer string.

Variants: sentence model x answer model, each a logistic regression (``lr``) or gradient
boosted trees (``gbdt``), over the shipped features alone or with five more from the static
embedder (for the question's content words the sentence lacks: the mean and the least of
each one's best cosine to a word of the sentence, the share below 0.5; the cosine of the
question's and the sentence's embeddings; the share of the question's words it lacks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ragtide.bench.answers import HELD_OUT, article, best_rows, collect, prompt_of
from ragtide.bench.data import data_dir
from ragtide.bench.metrics import normalize_answer
from ragtide.builtin.static_embedder import StaticEmbedder
from ragtide.support import features
from ragtide.text import STOPWORDS, stem, words


def _rows(records: list[dict[str, Any]]) -> list[tuple[int, str, str, list[float], bool, bool]]:
    """(question, query, sentence, features, right, in a gold paragraph) per candidate."""
    out = []
    for q, qa in enumerate(records):
        prompt = prompt_of(qa)
        query = prompt.intent.query or prompt.message
        golds = [g for g in (normalize_answer(a) for a in qa["answers"]) if g]
        gold_ids = set(qa["context_ids"])
        for hit, _, text, row in features(query, prompt.hits):
            in_gold = prompt.hits[hit - 1].document_id in gold_ids
            right = (
                not qa["is_impossible"]
                and in_gold
                and any(g in normalize_answer(text) for g in golds)
            )
            out.append((q, query, text, row, right, in_gold))
    return out


async def _embedding_features(rows: list[Any]) -> np.ndarray:
    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    vocab = sorted({w for r in rows for t in (r[1], r[2]) for w in words(t) if w not in STOPWORDS})
    table = np.asarray(await embedder.embed_documents(vocab), np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True) + 1e-9
    at = {w: i for i, w in enumerate(vocab)}
    queries = np.asarray(await embedder.embed_documents([r[1] for r in rows]), np.float32)
    sentences = np.asarray(await embedder.embed_documents([r[2] for r in rows]), np.float32)
    out = []
    for k, (_, query, text, *_) in enumerate(rows):
        q_words = [w for w in dict.fromkeys(words(query)) if w not in STOPWORDS]
        s_words = [w for w in words(text) if w not in STOPWORDS]
        s_stems = {stem(w) for w in s_words}
        missing = [w for w in q_words if stem(w) not in s_stems]
        if s_words and missing:
            best = (table[[at[w] for w in missing]] @ table[[at[w] for w in s_words]].T).max(1)
            soft = [float(best.mean()), float(best.min()), float((best < 0.5).mean())]
        else:
            soft = [1.0, 1.0, 0.0]
        cosine = float(queries[k] @ sentences[k])
        out.append([*soft, cosine, len(missing) / max(len(q_words), 1)])
    return np.array(out)


def _model(kind: str) -> Any:
    if kind == "lr":
        return LogisticRegression(C=10.0, max_iter=2000)
    return HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=40,
        l2_regularization=1.0,
        random_state=0,
    )


def _probe(records: list[dict[str, Any]], rows: list[Any], x: np.ndarray) -> dict[str, Any]:
    y = np.array([r[4] for r in rows], float)
    in_gold = np.array([r[5] for r in rows])
    owner = np.array([r[0] for r in rows])
    row_article = np.array([article(records[q]["context_ids"][0]) for q in owner])
    q_article = np.array([article(qa["context_ids"][0]) for qa in records])
    impossible = np.array([qa["is_impossible"] for qa in records])
    training = sorted(set(q_article) - set(HELD_OUT))
    out: dict[str, Any] = {}
    for sentence_kind in ("lr", "gbdt"):
        # out-of-fold supports on the training articles, a model of all seven on the rest
        support = np.zeros(len(y))
        for name in training:
            fit = np.isin(row_article, training) & (row_article != name)
            here = row_article == name
            support[here] = _model(sentence_kind).fit(x[fit], y[fit]).predict_proba(x[here])[:, 1]
        fit = np.isin(row_article, training)
        held = np.isin(row_article, HELD_OUT)
        support[held] = _model(sentence_kind).fit(x[fit], y[fit]).predict_proba(x[held])[:, 1]

        def stack(articles: Any, support: np.ndarray = support) -> tuple[np.ndarray, ...]:
            questions = np.flatnonzero(np.isin(q_article, articles))
            best = best_rows(owner, support, questions)
            feats = [np.r_[x[row], support[row], runner_up] for _, row, runner_up in best]
            rows = [row for _, row, _ in best]
            qs = [q for q, _, _ in best]
            return np.array(feats), y[rows], in_gold[rows], np.array(qs)

        train_x, train_y, _, _ = stack(training)
        test_x, right, gold, qs = stack(list(HELD_OUT))
        for answer_kind in ("lr", "gbdt"):
            score = _model(answer_kind).fit(train_x, train_y).predict_proba(test_x)[:, 1]
            out[f"sentence {sentence_kind}, answer {answer_kind}"] = _rates(
                score,
                right > 0,
                gold,
                impossible[qs],
                int((~impossible[np.isin(q_article, HELD_OUT)]).sum()),
            )
    return out


def _rates(
    score: np.ndarray, right: np.ndarray, gold: np.ndarray, impossible: np.ndarray, answerable: int
) -> dict[str, Any]:
    unanswerable = int(impossible.sum())
    best = None
    for t in np.unique(np.round(score, 3)):
        answered = score >= t
        holds = (answered & right).sum() / answerable
        cites = (answered & gold & ~impossible).sum() / answerable
        declined = (~answered & impossible).sum() / unanswerable
        if holds >= 0.75 and cites >= 0.75 and (best is None or declined > best["declined"]):
            best = {
                "declined": round(float(declined), 4),
                "holds": round(float(holds), 4),
                "cites": round(float(cites), 4),
                "threshold": float(t),
            }
    mask = impossible | right
    return {
        "auc_answerable": round(float(roc_auc_score(~impossible, score)), 4),
        "auc_right_vs_unanswerable": round(float(roc_auc_score(right[mask], score[mask])), 4),
        "best_declined_at_floors": best,
    }


async def _main(data: Path, out: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ragtide-probe-") as work:
        records = await collect(data, Path(work))
    rows = _rows(records)
    lexical = np.array([r[3] for r in rows])
    extra = await _embedding_features(rows)
    result = {
        "dataset": "squad-v2-dev-10art",
        "held_out_articles": list(HELD_OUT),
        "lexical features": _probe(records, rows, lexical),
        "lexical + static-embedding features": _probe(records, rows, np.hstack([lexical, extra])),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    parser.add_argument("--out", default="bench/results/answerability-probe.json")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_main(data_dir(args.data), Path(args.out))), indent=2))
