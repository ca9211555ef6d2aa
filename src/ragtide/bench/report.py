"""Render ``bench/results/*.json`` as the Markdown tables the README shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["render"]


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _server(s: dict[str, Any]) -> list[str]:
    rt, base = s["startup"]["ragtide"], s["startup"]["baseline"]
    search, chat = s["search"], s["chat_50rps"]
    ready_ok = rt["ready_s_median"] <= 0.8 and rt["ready_s_median"] <= 2 * base["ready_s_median"]
    return [
        "Server, one process, 2,000 SciFact documents, same FastAPI/uvicorn as the bare "
        "baseline (FastAPI + uvicorn + numpy brute force), measured side by side in one run "
        "(`ragtide bench server`):",
        "",
        _row("measure", "Ragtide", "bare baseline", "ratio", "floor", "verdict"),
        _row("---", "---", "---", "---", "---", "---"),
        _row(
            "spawn → `/ready` 200, median of 7",
            f"{rt['ready_s_median']} s",
            f"{base['ready_s_median']} s",
            s["ratios"]["ready_time_vs_baseline"],
            "≤ 0.8 s and ≤ 2x baseline",
            _verdict(ready_ok),
        ),
        _row(
            "idle RSS",
            f"{rt['idle_rss_mb_median']} MB",
            f"{base['idle_rss_mb_median']} MB",
            s["ratios"]["idle_rss_vs_baseline"],
            "≤ 150 MB",
            _verdict(rt["idle_rss_mb_median"] <= 150),
        ),
        _row(
            "`/search` req/s, wrk, 16 connections",
            search["ragtide"]["rps"],
            search["baseline"]["rps"],
            s["ratios"]["search_rps_vs_baseline"],
            "≥ 1,000",
            _verdict(search["ragtide"]["rps"] >= 1000),
        ),
        _row(
            "`/search` p99 under that load",
            f"{search['ragtide']['p99_ms']} ms",
            f"{search['baseline']['p99_ms']} ms",
            "",
            "≤ 25 ms",
            _verdict(search["ragtide"]["p99_ms"] <= 25),
        ),
        _row(
            "`/search` CPU per request",
            f"{search['ragtide']['cpu_ms_per_request']} ms",
            f"{search['baseline']['cpu_ms_per_request']} ms",
            "",
            "",
            "",
        ),
        _row(
            "`/chat` (extractive) p50 / p99 at 50 req/s open loop",
            f"{chat['p50_ms']} / {chat['p99_ms']} ms",
            "",
            "",
            "p99 ≤ 60 ms",
            _verdict(chat["p99_ms"] is not None and chat["p99_ms"] <= 60),
        ),
    ]


def _quality(q: dict[str, Any]) -> list[str]:
    lines = [
        f"Retrieval on BEIR SciFact ({q['queries']} train queries; a document ranks where its "
        "best chunk does; `ragtide bench quality`):",
        "",
        _row(
            "embedder",
            "fusion",
            "vector weight",
            "candidates/list",
            "nDCG@10",
            "Recall@100",
            "MRR@10",
        ),
        _row("---", "---", "---", "---", "---", "---", "---"),
    ]
    for v in q["variants"]:
        recall = v["recall@100"] if v["recall@100"] is not None else "-"
        lines.append(
            _row(
                v["embedder"],
                v["fusion"],
                v["vector_weight"],
                v.get("candidates", ""),
                v["ndcg@10"],
                recall,
                v["mrr@10"],
            )
        )
    return lines


def _postgres(q: dict[str, Any], sqlite: dict[str, Any] | None) -> list[str]:
    base = {
        (v["fusion"], v["vector_weight"], v.get("candidates")): v
        for v in (sqlite or {}).get("variants", [])
        if v["embedder"] in ("-", "static")
    }
    lines = [
        "The PostgreSQL store on the same queries (same analyzer and BM25 in SQL, HNSW):",
        "",
        _row(
            "fusion",
            "vector weight",
            "candidates/list",
            "nDCG@10 PostgreSQL",
            "nDCG@10 SQLite",
            "difference",
        ),
        _row("---", "---", "---", "---", "---", "---"),
    ]
    for v in q["variants"]:
        other = base.get((v["fusion"], v["vector_weight"], v.get("candidates")))
        diff = round(v["ndcg@10"] - other["ndcg@10"], 4) if other else ""
        lines.append(
            _row(
                v["fusion"],
                v["vector_weight"],
                v.get("candidates"),
                v["ndcg@10"],
                other["ndcg@10"] if other else "",
                diff,
            )
        )
    ingest = q["ingest"]["static"]
    lines += ["", f"(PostgreSQL ingestion: {ingest['chunks']} chunks in {ingest['seconds']} s.)"]
    return lines


def _cluster_tiers(c: dict[str, Any]) -> list[str]:
    """CPU per request by tier at each replica count (runs that accounted for it)."""
    runs = [(n, r) for n, r in sorted(c["cluster"].items()) if "cpu_ms_per_request" in r["search"]]
    if not runs:
        return []
    tiers = ("api", "database", "redis", "proxy", "other")
    lines = [
        "",
        "CPU per request by tier, ms (`/proc` of each tier's processes; *other* is the rest "
        "of the machine's busy time: wrk, the kernel, anything else running):",
        "",
        _row("replicas", "endpoint", "API replicas", "PostgreSQL", "Redis", "nginx", "other"),
        _row("---", "---", "---", "---", "---", "---", "---"),
    ]
    for n, r in runs:
        for kind in ("search", "chat"):
            cpu = r[kind]["cpu_ms_per_request"]
            lines.append(_row(n, f"/{kind}", *(cpu.get(t, "-") for t in tiers)))
    db = c.get("database_tier")
    if db:
        cost, by = db["cpu_seconds_per_request"], db["by_replicas"]
        lines += [
            "",
            "PostgreSQL's CPU per `/search` at "
            + ", ".join(f"{n} replica(s) {v['search']} ms" for n, v in sorted(by.items()))
            + f"; the median (/search {cost['search'] * 1000:.3g} ms, /chat "
            f"{cost['chat'] * 1000:.3g} ms) is "
            "`database.cpu_seconds_per_request` for `ragtide plan` (capacity.json), which "
            "then says at what rate the database, not the pods, saturates.",
        ]
    return lines


def _cluster(c: dict[str, Any]) -> list[str]:
    lines = [
        "Replicas behind nginx on PostgreSQL + Redis against the embedded default, answer "
        f"cache off, wrk with {c['connections']} connections (`ragtide bench cluster`); "
        "everything shares this machine's 2 cores"
        + (
            f"; other work was running (1-minute load {c['machine']['loadavg_1m_at_start']:.1f} "
            "before the bench): use the CPU columns"
            if c["machine"].get("machine_busy")
            else ""
        )
        + ":",
        "",
        _row("setup", "/chat req/s", "/chat p99", "/search req/s", "/search p99"),
        _row("---", "---", "---", "---", "---"),
    ]
    emb = c["embedded"]
    lines.append(
        _row(
            "embedded (SQLite, 1 process, no nginx)",
            emb["chat"]["rps"],
            f"{emb['chat']['p99_ms']} ms",
            emb["search"]["rps"],
            f"{emb['search']['p99_ms']} ms",
        )
    )
    for n, r in sorted(c["cluster"].items()):
        lines.append(
            _row(
                f"{n} replica(s) + nginx, PostgreSQL + Redis",
                r["chat"]["rps"],
                f"{r['chat']['p99_ms']} ms",
                r["search"]["rps"],
                f"{r['search']['p99_ms']} ms",
            )
        )
    lines += _cluster_tiers(c)
    start = c.get("startup_postgres")
    latency = c.get("search_latency_postgres")
    if start:
        lines += [
            "",
            f"Start on PostgreSQL, spawn → ready: cold (migrations) {start['cold_ready_s']} s, "
            f"warm {start['warm_ready_s']} s.",
        ]
    if latency:
        lines += [
            f"`/search` on one PostgreSQL-backed replica at 50 req/s: p50 "
            f"{latency['p50_ms']} ms, p99 {latency['p99_ms']} ms (floor ≤ 30 ms)."
        ]
    return lines


_AUTH_VARIANTS = (
    ("off", "auth off (anonymous)"),
    ("off_with_key", "auth off, API key presented (same process as auth off)"),
    ("key", "auth on, API key"),
    ("jwt", "auth on, JWT (ES256, JWKS file)"),
    ("key_quota", "auth on, API key + a quota (in-process rate limiter checks)"),
)


def _auth(a: dict[str, Any]) -> list[str]:
    search, micro, revoke = a["search"], a["authenticate"], a["revocation"]
    lines = [
        f"Authentication's cost, `/search` on {a['documents']:,} SciFact documents under wrk "
        f"with {a['connections']} connections, one process per variant, {a['rounds']} "
        f"interleaved rounds of {a['seconds']} s; medians, ratios paired round by round "
        f"(`ragtide bench auth`; {a['machine']['cores']} shared cores, load "
        f"{a['machine']['loadavg_1m_at_start']:.1f} at the start):",
        "",
        _row("variant", "req/s", "p99", "CPU per request", "req/s vs auth off", "CPU added"),
        _row("---", "---", "---", "---", "---", "---"),
    ]
    for name, label in _AUTH_VARIANTS:
        v = search.get(name)
        if v is None:
            continue
        lines.append(
            _row(
                label,
                v["rps"],
                f"{v['p99_ms']} ms",
                f"{v['cpu_ms_per_request']} ms",
                v.get("rps_vs_off", ""),
                f"{v['cpu_ms_per_request_added']:+} ms" if "cpu_ms_per_request_added" in v else "",
            )
        )
    ratio = search["key"]["rps_vs_off"]
    added = search["key"]["cpu_ms_per_request_added"]
    same = search.get("off_with_key", {}).get("cpu_ms_per_request_added")
    predicted = a.get("predicted_from_microbenchmark", {}).get("key_cpu_ms_per_request_added")
    also = [f"same process {same} ms" if same is not None else ""]
    also.append(f"microbenchmark {predicted} ms" if predicted is not None else "")
    delays = f"max {revoke['max_s']} s, median {revoke['median_s']} s"
    lines += [
        "",
        _row("measure", "value", "floor", "verdict"),
        _row("---", "---", "---", "---"),
        _row("`/search` req/s, API key vs auth off", ratio, "≥ 0.95", _verdict(ratio >= 0.95)),
        _row(
            "CPU per request added by the key check",
            f"{added} ms ({'; '.join(x for x in also if x)})",
            "≤ 0.05 ms",
            _verdict(added <= 0.05),
        ),
        _row(
            f"revoked through replica 1, refused by replicas 2 and 3 ({revoke['replicas']} "
            f"replicas, one PostgreSQL, {len(revoke['trials'])} trials, key cached just before)",
            f"{delays} (auth.cache_seconds {revoke['auth_cache_seconds']} s)",
            "≤ 5 s",
            _verdict(revoke["max_s"] <= 5),
        ),
        "",
        f"`Authenticator.authenticate` in-process, per call: cached API key "
        f"{micro['api_key_cached_us']} µs, cached JWT {micro['jwt_cached_us']} µs, anonymous "
        f"(auth off) {micro['anonymous_auth_off_us']} µs; a tenant's rate check "
        f"(`TenantDirectory.admit`, in-process limiter) "
        f"{micro['admit_search_quota_in_memory_us']} µs.",
    ]
    return lines


def _load_note(machine: dict[str, Any]) -> str:
    start = machine.get("loadavg_at_start") or [float("nan")]
    end = machine.get("loadavg_at_end") or [float("nan")]
    return (
        f"{machine.get('cores')} shared cores, 1-minute load {start[0]:.1f} at the start, "
        f"{end[0]:.1f} at the end"
    )


def _ms(value: object) -> str:
    return "-" if value is None else f"{value} ms"


def _hardening(h: dict[str, Any]) -> list[str]:
    setup, phases = h["setup"], h["phases"]
    quiet, alone, mixed = phases["quiet"], phases["search_only"], phases["mixed"]
    big, bomb = phases["large_md"], phases["docx_bomb"]
    lines = [
        f"Hardening, one `ragtide serve` process (embedded SQLite, {setup['embedder']}) over a "
        f"{setup['chunks']:,}-chunk namespace; `/healthz` probed every "
        f"{setup['probe_interval_ms']:.0f} ms by another process throughout; measured, not "
        f"asserted (`ragtide bench hardening`; {_load_note(h['machine'])}):",
        "",
        _row(
            "phase",
            "`/healthz` p50 / p99 / max",
            "`/search` p50 / p99",
            "server VmHWM (since start)",
            "parse workers' peak RSS",
            "upload status",
        ),
        _row("---", "---", "---", "---", "---", "---"),
    ]

    def health(p: dict[str, Any]) -> str:
        x = p["healthz"]
        failed = f", {x['failed']} failed" if x["failed"] else ""
        return f"{x['p50_ms']} / {x['p99_ms']} / {x['max_ms']} ms{failed}"

    def workers(p: dict[str, Any]) -> str:
        return f"{p['worker_rss_max_mb']} MB" if p["workers_seen"] else "(none running)"

    seq = alone.get("sequential")
    uploads = mixed["uploads"]
    statuses = ", ".join(f"{n}x {s}" for s, n in sorted(uploads["statuses"].items()))
    rows = [
        (f"quiet, {quiet['seconds']:.0f} s", quiet, "", ""),
        (
            f"`/search` alone, {alone['search']['rate']:.0f} req/s open loop, "
            f"{alone['search']['requests'] / alone['search']['rate']:.0f} s (achieved "
            f"{alone['search']['achieved_rps']} req/s)",
            alone,
            f"{alone['search']['p50_ms']} / {alone['search']['p99_ms']} ms",
            "",
        ),
        (
            f"mixed: `/search` at {mixed['search']['rate']:.0f} req/s + a small `.md` upload "
            f"every {setup['upload_interval_ms']:.0f} ms (achieved "
            f"{mixed['search']['achieved_rps']} req/s)",
            mixed,
            f"{mixed['search']['p50_ms']} / {mixed['search']['p99_ms']} ms",
            f"{statuses} (p50 {uploads['p50_ms']} ms, p99 {uploads['p99_ms']} ms)",
        ),
        (
            f"{big['upload']['bytes'] / 1048576:.0f} MiB single-line `.md` "
            f"({big['upload']['seconds']} s)",
            big,
            "",
            f"{big['upload']['status']} {big['upload']['code'] or ''}".strip(),
        ),
        (
            f"`.docx` bomb, {bomb['upload']['bytes'] / 1048576:.1f} MiB inflating to "
            f"{setup['bomb_inflated_bytes'] / 1073741824:.1f} GiB ({bomb['upload']['seconds']} s)",
            bomb,
            "",
            f"{bomb['upload']['status']} {bomb['upload']['code'] or ''}".strip(),
        ),
    ]
    for label, p, search, status in rows:
        lines.append(
            _row(label, health(p), search, f"{p['server_vmhwm_mb']} MB", workers(p), status)
        )
    if seq:
        lines += [
            "",
            f"One search at a time on that namespace: p50 {seq['p50_ms']} ms, p99 "
            f"{seq['p99_ms']} ms, {seq['server_cpu_ms_per_search']} ms of server CPU per search "
            f"(so {setup['search_rate']:.0f} req/s is "
            f"{setup['search_rate'] * seq['server_cpu_ms_per_search'] / 1000:.0%} of a free "
            "core). Setup: the namespace written straight into the database file in "
            f"{setup['fill_s']} s; spawn → ready {setup['ready_s']} s; first search (cold index "
            f"load) {setup['first_search_s']} s.",
        ]
    return lines


def _grpc(g: dict[str, Any]) -> list[str]:
    m, ratio = g["median_of_rounds"], g["grpc_vs_http"]
    machine = g.get("machine") or {"cores": g.get("cpus")}
    lines = [
        f"gRPC `Search` against HTTP `/search`, one server process serving both, "
        f"{g['documents']:,} SciFact documents, closed loop with {g['concurrency']} in flight, "
        f"{g['rounds']} alternating rounds of {g['seconds_per_run']:.0f} s, medians "
        f"(`ragtide bench grpc`; {_load_note(machine)}):",
        "",
        _row("protocol", "req/s", "p50", "p90", "p99", "server CPU per call"),
        _row("---", "---", "---", "---", "---", "---"),
    ]
    for name, label in (("http", "HTTP/1.1 JSON `/search`"), ("grpc", "gRPC `Search`")):
        r = m[name]
        lines.append(
            _row(
                label,
                r["rps"],
                _ms(r["p50_ms"]),
                _ms(r["p90_ms"]),
                _ms(r["p99_ms"]),
                f"{r['server_cpu_us_per_call']} µs",
            )
        )
    lines.append(
        _row(
            "gRPC / HTTP",
            ratio["rps_ratio"],
            "",
            "",
            ratio["p99_ratio"],
            ratio["cpu_ratio"],
        )
    )
    return lines


def _llm(b: dict[str, Any]) -> list[str]:
    setup, ttft, rates = b["setup"], b["ttft"], b["model_rates"]
    added = ttft["added_ms"]
    lines = [
        f"LLM in the loop (`ragtide bench llm`): the `openai` chat model against "
        f"{setup['model_server']} serving {setup['model']}, on loopback; "
        f"{setup['documents']} Kubernetes concept pages, prompts of about "
        f"{setup['prompt_chars']:,} characters, `max_tokens` {setup['max_tokens']}; "
        f"{_load_note(b['machine'])}. The model server's own time is taken per request by a "
        f"relay in front of it; the same prompts go to it directly in the same run:",
        "",
        _row("time to first token", "p50", "p99", "floor", "verdict"),
        _row("---", "---", "---", "---", "---"),
        _row("streamed `/chat` turn", _ms(ttft["ragtide"]["p50_ms"]),
             _ms(ttft["ragtide"]["p99_ms"]), "", ""),
        _row("the model server alone, same prompt", _ms(ttft["model_server"]["p50_ms"]),
             _ms(ttft["model_server"]["p99_ms"]), "", ""),
        _row(f"added by Ragtide ({ttft['pairs']} pairs, per request)", _ms(added["p50"]),
             _ms(added["p99"]), f"p99 ≤ {added['goal_p99']:g} ms",
             _verdict(added["p99"] <= added["goal_p99"])),
        "",
        _row("concurrency", "model server alone, req/s", "through Ragtide `/chat`, req/s",
             "ratio", "Ragtide CPU per turn", "not the bottleneck (≥ 0.9)"),
        _row("---", "---", "---", "---", "---", "---"),
    ]  # fmt: skip
    for level in b["throughput"]:
        lines.append(
            _row(
                level["concurrency"],
                level["model_server_rps"],
                level["ragtide_rps"],
                level["ratio"],
                f"{level['ragtide_cpu_ms_per_turn']} ms",
                _verdict(level["ratio"] >= 0.9),
            )
        )
    stages = ttft.get("stages_ms_per_turn", {})
    before = ", ".join(
        f"{name} {stages[name]} ms" for name in ("history", "intent", "embed", "retrieve")
        if name in stages
    )  # fmt: skip
    busy = b["machine"].get("machine_busy", True)
    waiting = ", and waiting for a CPU on the busy machine" if busy else ""
    on_busy = " on the busy machine" if busy else ""
    lines += [
        "",
        f"Where the added time goes, mean per streamed turn: {before} (the stage timers); "
        f"the rest is the HTTP request in, the request to the model server and the events "
        f"out{waiting}. Ragtide's own overhead "
        f"{_ms(ttft['ragtide_overhead']['p50_ms'])} at the median, the relay's alone "
        f"{_ms(ttft['relay_overhead']['p50_ms'])}.",
        "",
        f"Ragtide CPU per streamed turn {ttft['ragtide_cpu_ms_per_streamed_turn']} ms. The model "
        f"server with one thread: prefill {rates['prefill_tokens_per_s_one_thread']} tokens/s, "
        f"decode {rates['decode_tokens_per_s_one_thread']} tokens/s of wall time{on_busy}; "
        f"per second of its CPU time (one core's work) prefill "
        f"{rates.get('prefill_tokens_per_cpu_second', '-')} and decode "
        f"{rates.get('decode_tokens_per_cpu_second', '-')} tokens/s. SmolLM2-135M is tiny: a "
        "real model does tens of times the work per token, and Ragtide's share is smaller still.",
    ]
    return lines


def _scale_postgres(p: dict[str, Any]) -> list[str]:
    note = " (machine busy: use the CPU columns)" if p.get("machine_busy") else ""
    out = [
        f"PostgreSQL + pgvector as one namespace grows (`ragtide bench scale-postgres`){note}:",
        "",
        _row(
            "chunks",
            "ingest chunks/s",
            "DB / app CPU per chunk",
            "keyword DB CPU exact → index",
            "keyword nDCG@10 exact / index",
            "vector DB CPU (HNSW halfvec)",
            "vector nDCG@10",
        ),
        _row(*["---"] * 7),
    ]
    for size in p["sizes"]:
        ingest, search = size["ingest"], size["search"]
        segments = ingest.get("segments") or [{}]
        db = [s.get("db_cpu_ms_per_chunk") for s in segments if s.get("db_cpu_ms_per_chunk")]
        app = [s.get("app_cpu_ms_per_chunk") for s in segments if s.get("app_cpu_ms_per_chunk")]
        exact, vector = search["keyword_exact"], search["vector"]
        driven = [v for k, v in search.items() if k.startswith("keyword_") and v is not exact]
        index = driven[0] if driven else exact
        out.append(
            _row(
                f"{size['chunks']:,}",
                ingest["chunks_per_s"],
                f"{min(db):.2f} to {max(db):.2f} / {min(app):.2f} to {max(app):.2f} ms"
                if db and app
                else "n/a",
                f"{exact['db_cpu_ms_per_search']} → {index['db_cpu_ms_per_search']} ms",
                f"{exact['ndcg@10']} / {index['ndcg@10']}",
                f"{vector['db_cpu_ms_per_search']} ms",
                vector["ndcg@10"],
            )
        )
    return out


def render(results: Path) -> str:
    out: list[str] = []
    server = _load(results, "server")
    if server:
        out += [*_server(server), ""]
    quality = _load(results, "quality-scifact")
    if quality:
        out += [*_quality(quality), ""]
    postgres = _load(results, "quality-scifact-postgres")
    if postgres:
        out += [*_postgres(postgres, quality), ""]
    cluster = _load(results, "cluster")
    if cluster:
        out += [*_cluster(cluster), ""]
    auth = _load(results, "auth")
    if auth:
        out += [*_auth(auth), ""]
    grpc = _load(results, "grpc")
    if grpc:
        out += [*_grpc(grpc), ""]
    hardening = _load(results, "hardening")
    if hardening:
        out += [*_hardening(hardening), ""]
    scale = _load(results, "scale")
    if scale:
        from ragtide.bench.scale import report_lines

        out += [*report_lines(scale, _load_note(scale["machine"])), ""]
    scale_postgres = _load(results, "scale-postgres")
    if scale_postgres:
        out += [*_scale_postgres(scale_postgres), ""]
    llm = _load(results, "llm")
    if llm:
        out += [*_llm(llm), ""]
    squad = _load(results, "answers-squad")
    if squad:
        out += [
            f"Answers on SQuAD ({squad['questions']} questions over {squad['ingest']['documents']} "
            "paragraphs, the whole default pipeline; `ragtide bench squad`): token F1 "
            f"{squad['token_f1']}, exact match {squad['exact_match']}, first citation is the gold "
            f"paragraph {squad['citation_hit_rate_first']}, any citation "
            f"{squad['citation_hit_rate_any']}, gold paragraph retrieved in the top 5 "
            f"{squad['retrieval_recall@5']}; {squad['answer_ms_p50']} ms median per answer.",
            "",
        ]
    ingest = _load(results, "ingest")
    if ingest:
        out += [
            _row(
                "ingestion (`ragtide ingest`, default config)",
                "documents",
                "chunks",
                "seconds",
                "chunks/s",
                "re-ingest, unchanged",
                "floor",
            ),
            _row("---", "---", "---", "---", "---", "---", "---"),
        ]
        for name in ("scifact", "k8s-docs"):
            first, again = ingest[name]["first"], ingest[name]["reingest"]
            docs = first.get("created", 0) + first.get("updated", 0)
            rejected = first.get("rejected", 0)
            note = f"{docs} (+{rejected} rejected as empty)" if rejected else str(docs)
            out.append(
                _row(
                    name,
                    note,
                    first["chunks"],
                    first["seconds"],
                    first["chunks_per_s"],
                    f"{again['seconds']} s",
                    "≤ 60 s",
                )
            )
        if "large-jsonl" in ingest:
            out.append(_large_jsonl_row(ingest["large-jsonl"]))
        out.append("")
    return "\n".join(out)


def _large_jsonl_row(large: dict[str, Any]) -> str:
    """The ingestion table's row for one large local JSONL (``bench.ingest --large``)."""
    rates = large["chunks_per_s_by_segment"]
    third = max(len(rates) // 3, 1)
    early, late = sum(rates[:third]) / third, sum(rates[-third:]) / third
    trend = "no decline" if late >= 0.9 * early else "declining"
    cpu = large["cpu_ms_per_chunk"]
    load = large["loadavg_1m"]
    size_mb = large["file_bytes"] / 1e6
    verdict = "met" if large["chunks_per_s"] >= 850 else "not met"
    return _row(
        f"one {size_mb:.0f} MB JSONL (scale corpus), rate per {large['segment_chunks']:,} chunks "
        f"{min(rates):.0f}-{max(rates):.0f}/s, {trend}; CPU per chunk {cpu['process']:.2f} ms + "
        f"{cpu['parse_workers']:.2f} ms in parse workers (`python -m ragtide.bench.ingest "
        f"--large {round(large['chunks'], -5)}`, load {min(load):.1f}-{max(load):.1f})",
        large["documents"],
        large["chunks"],
        large["seconds"],
        large["chunks_per_s"],
        "-",
        f"≥ 850 chunks/s (1M in 20 min): {verdict}",
    )


if __name__ == "__main__":
    print(render(Path("bench/results")))
