"""The ``ragtide`` command: serve, worker, ingest, search, chat, tenants, keys, bench, plan,
plugins, config.

Settings are built once here, from the environment (``RAGTIDE_*``) with command-line
flags taking precedence, and passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from ragtide.settings import Settings

    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    http: dict[str, Any] = {}
    if getattr(args, "host", None):
        http["host"] = args.host
    if getattr(args, "port", None) is not None:
        http["port"] = args.port
    try:
        settings = Settings(**overrides)
        if http:
            settings = settings.model_copy(update={"http": settings.http.model_copy(update=http)})
        return settings
    except ValidationError as exc:
        raise SystemExit(f"ragtide: invalid settings:\n{exc}") from None


def _namespace(args: argparse.Namespace) -> str:
    """The store key of the namespace the local commands work on: ``--tenant``'s."""
    import os

    from ragtide.types import DEFAULT_NAMESPACE, DEFAULT_TENANT, namespace_key

    name = str(args.namespace or os.environ.get("RAGTIDE_NAMESPACE") or DEFAULT_NAMESPACE)
    tenant = str(getattr(args, "tenant", None) or DEFAULT_TENANT)
    return namespace_key(tenant, name)


# --- serve ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from ragtide.server import serve

    return serve(_settings(args))


def cmd_worker(args: argparse.Namespace) -> int:
    from ragtide.worker.main import run_worker

    settings = _settings(args)
    worker: dict[str, Any] = {"host": args.worker_host} if args.worker_host else {}
    if args.worker_port is not None:
        worker["port"] = args.worker_port
    if worker:
        settings = settings.model_copy(update={"worker": settings.worker.model_copy(update=worker)})
    return run_worker(settings)


# --- ingest --------------------------------------------------------------------------------


def cmd_ingest(args: argparse.Namespace) -> int:
    if args.url:
        return _remote_ingest(args)
    from contextlib import AsyncExitStack
    from typing import cast

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from ragtide.components import BulkLoader
    from ragtide.ingest.pipeline import Ingestor, IngestOutcome, iter_files
    from ragtide.runtime import build_runtime

    settings = _settings(args)
    namespace = _namespace(args)
    paths = [Path(p) for p in args.paths]
    if args.demo:
        paths.append(_demo_dir())
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(
            f"ragtide: no such file or directory: {', '.join(map(str, missing))}", file=sys.stderr
        )
        return 2
    rt = build_runtime(settings)  # built, not started: nothing opened yet
    if args.bulk and not isinstance(rt.store, BulkLoader):
        print(
            f"ragtide: --bulk: the {settings.store.use!r} store has no bulk mode (postgres"
            " has); ingest without it",
            file=sys.stderr,
        )
        return 2
    files = list(iter_files(paths))
    console = Console(stderr=True)
    counts: dict[str, int] = {}
    chunks = 0

    async def run() -> None:
        await rt.start()
        try:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                disable=args.quiet,
            ) as progress:
                title = f"ingesting into {namespace.rpartition('/')[2]}"
                task = progress.add_task(title, total=len(files))
                seen: set[str] = set()

                def on_outcome(o: IngestOutcome) -> None:
                    nonlocal chunks
                    counts[o.status] = counts.get(o.status, 0) + 1
                    chunks += o.chunks
                    if o.source not in seen:
                        seen.add(o.source)
                        progress.advance(task)
                    # A streamed JSONL file is one file of many documents: count them too.
                    done = sum(counts.values())
                    progress.update(task, description=f"{title} ({done:,} documents)")
                    if o.status == "rejected":
                        progress.console.print(f"[red]rejected[/] {o.reason}")

                async with AsyncExitStack() as stack:
                    if args.bulk:  # the store's search indexes are built after the load
                        await stack.enter_async_context(cast(BulkLoader, rt.store).bulk_load())
                    # stops the parse workers when done; keep=False: a streamed file of
                    # millions of records is counted, not kept
                    ingestor = await stack.enter_async_context(Ingestor(rt))
                    await ingestor.ingest_paths(namespace, paths, on_outcome, keep=False)
        finally:
            await rt.aclose()

    began = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - began
    summary = {
        "namespace": namespace.rpartition("/")[2],
        **counts,
        "chunks": chunks,
        "seconds": round(elapsed, 2),
        "chunks_per_s": round(chunks / elapsed, 1),
    }
    if args.json or not args.quiet:
        print(json.dumps(summary))
    return 1 if counts.get("rejected") else 0


def _demo_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("ragtide").joinpath("demo")))


# --- search / chat -------------------------------------------------------------------------


def _with_runtime(args: argparse.Namespace, fn: Callable[[Any], Any]) -> Any:
    from ragtide.runtime import build_runtime

    async def run() -> Any:
        rt = build_runtime(_settings(args))
        await rt.start()
        try:
            return await fn(rt)
        finally:
            await rt.aclose()

    return asyncio.run(run())


def cmd_search(args: argparse.Namespace) -> int:
    if args.url:
        return _remote_search(args)
    from ragtide import chat
    from ragtide.errors import RagtideError

    namespace = _namespace(args)
    try:
        hits = _with_runtime(args, lambda rt: chat.search(rt, namespace, args.query, args.top_k))
    except RagtideError as exc:
        print(f"ragtide: {exc.message}", file=sys.stderr)
        return 1
    for rank, hit in enumerate(hits, 1):
        text = " ".join(hit.chunk.text.split())
        print(f"{rank:>2}. {hit.score:.4f}  {hit.chunk.document_id}  {hit.chunk.title}")
        print(f"    {text[:200]}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    if args.url:
        return _remote_chat(args)
    from rich.console import Console

    from ragtide import chat
    from ragtide.errors import RagtideError

    namespace = _namespace(args)
    console = Console()

    async def loop(rt: Any) -> None:
        session = None
        messages = list(args.message) if args.message else None
        while True:
            if messages is not None:
                if not messages:
                    return
                message = messages.pop(0)
            else:
                try:
                    message = console.input("[bold cyan]you>[/] ")
                except (EOFError, KeyboardInterrupt):
                    console.print()  # leave the prompt's line: the shell starts on its own
                    return
                if message.strip() in {"/quit", "/exit"}:
                    return
                if not message.strip():
                    continue
            try:
                answer = await chat.answer(rt, namespace, message, session)
            except RagtideError as exc:
                console.print(f"[red]{exc.message}[/]")
                continue
            session = answer.session_id
            console.print(f"[bold green]ragtide>[/] {answer.text}")
            for c in answer.citations:
                console.print(f"  [dim][{c.index}] {c.title} ({c.document_id})[/]")

    if not args.message:
        console.print(f"Chatting with namespace [bold]{namespace}[/]; /quit to leave.")
    _with_runtime(args, loop)
    return 0


# --- remote: ingest / search / chat against a deployed API (--url) --------------------------


class _Refusal(Exception):
    """A remote command stops: the message to print and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def _remote_namespace(args: argparse.Namespace) -> str:
    """The namespace name for ``--url``: the tenant is the API key's, never a flag."""
    import os

    if getattr(args, "tenant", None):
        raise _Refusal("--tenant does not apply with --url: the tenant is the API key's", 2)
    return str(args.namespace or os.environ.get("RAGTIDE_NAMESPACE") or "default")


def _remote(args: argparse.Namespace, run: Callable[[Any, str], int]) -> int:
    """Run ``run(client, namespace)`` against ``--url``; API errors become exit code 1."""
    from ragtide.client import Client, RagtideAPIError, RagtideConnectionError

    try:
        namespace = _remote_namespace(args)
        with Client(args.url, api_key=args.api_key) as client:
            return run(client, namespace)
    except _Refusal as exc:
        print(f"ragtide: {exc.message}", file=sys.stderr)
        return exc.code
    except RagtideAPIError as exc:
        print(f"ragtide: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except RagtideConnectionError as exc:
        print(f"ragtide: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1


def _remote_search(args: argparse.Namespace) -> int:
    def run(client: Any, namespace: str) -> int:
        for rank, hit in enumerate(
            client.search(args.query, namespace=namespace, top_k=args.top_k), 1
        ):
            text = " ".join(hit.text.split())
            print(f"{rank:>2}. {hit.score:.4f}  {hit.document_id}  {hit.title}")
            print(f"    {text[:200]}")
        return 0

    return _remote(args, run)


def _remote_chat(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ragtide.client import ChatAnswer, RagtideAPIError

    console = Console()

    def run(client: Any, namespace: str) -> int:
        session: str | None = None
        messages = list(args.message) if args.message else None
        if messages is None:
            console.print(
                f"Chatting with namespace [bold]{namespace}[/] at {args.url}; /quit to leave."
            )
        while True:
            if messages is not None:
                if not messages:
                    return 0
                message = messages.pop(0)
            else:
                try:
                    message = console.input("[bold cyan]you>[/] ")
                except (EOFError, KeyboardInterrupt):
                    console.print()  # leave the prompt's line: the shell starts on its own
                    return 0
                if message.strip() in {"/quit", "/exit"}:
                    return 0
                if not message.strip():
                    continue
            console.print("[bold green]ragtide>[/] ", end="")
            try:
                for item in client.chat_stream(message, namespace=namespace, session_id=session):
                    if isinstance(item, ChatAnswer):
                        session = item.session_id
                        console.print()
                        for c in item.citations:
                            console.print(
                                f"  [dim]\\[{c.index}] {c.title} ({c.document_id})[/]",
                                highlight=False,
                            )
                    else:
                        console.print(item.text, end="", markup=False, highlight=False)
            except RagtideAPIError as exc:
                console.print()
                if exc.status in (401, 403):
                    raise
                console.print(f"[red]{exc.code}: {exc.message}[/]", highlight=False)

    return _remote(args, run)


def _remote_ingest(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from ragtide.client import RagtideAPIError
    from ragtide.ingest.pipeline import iter_files

    paths = [Path(p) for p in args.paths]
    if args.demo:
        paths.append(_demo_dir())
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(
            f"ragtide: no such file or directory: {', '.join(map(str, missing))}", file=sys.stderr
        )
        return 2
    if args.bulk:
        print("ragtide: --bulk is for a local store, not with --url", file=sys.stderr)
        return 2
    files = list(iter_files(paths))
    console = Console(stderr=True)
    counts: dict[str, int] = {}
    chunks = 0
    # Refusals of one file (its type, size, content): report it and go on with the rest.
    per_file = {413, 415, 422}

    def run(client: Any, namespace: str) -> int:
        nonlocal chunks
        began = time.perf_counter()
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=args.quiet,
        ) as progress:
            overall = progress.add_task(f"ingesting into {namespace}", total=len(files))
            sending = progress.add_task("", total=None, visible=False)
            for file, doc_id in files:
                progress.update(sending, description=doc_id, completed=0, visible=True)

                def on_progress(sent: int, total: int) -> None:
                    progress.update(sending, completed=sent, total=total)

                try:
                    result = client.upload(
                        namespace, file, document_id=doc_id, progress=on_progress
                    )
                except RagtideAPIError as exc:
                    if exc.status not in per_file:
                        raise
                    counts["rejected"] = counts.get("rejected", 0) + 1
                    progress.console.print(
                        f"[red]rejected[/] {file}: {exc.message}", highlight=False
                    )
                else:
                    for o in result.documents:
                        counts[o.status] = counts.get(o.status, 0) + 1
                        chunks += o.chunks
                        if o.status == "rejected":
                            progress.console.print(
                                f"[red]rejected[/] {o.source}: {o.error_message}", highlight=False
                            )
                progress.advance(overall)
            progress.update(sending, visible=False)
        elapsed = time.perf_counter() - began
        summary = {
            "namespace": namespace,
            **counts,
            "chunks": chunks,
            "seconds": round(elapsed, 2),
            "chunks_per_s": round(chunks / elapsed, 1) if elapsed > 0 else 0.0,
        }
        if args.json or not args.quiet:
            print(json.dumps(summary))
        return 1 if counts.get("rejected") else 0

    return _remote(args, run)


# --- plugins / config ----------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    from ragtide.registry import Registry

    for info in Registry.from_entry_points().plugins():
        print(f"{info.kind:<15} {info.name:<12} {info.target}  ({info.distribution})")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the store's schema up to date and exit: a one-off Job before a rollout.

    Replicas apply missing migrations when they start, each statement bounded by the
    store's ``migration_timeout_ms`` (300 s), and a starting replica answers no probe
    meanwhile. A migration that rewrites every row (6: partitioning) outgrows that on a
    large database; run it here first, with ``--timeout-s`` as long as it needs."""
    from ragtide.components import DocumentStore
    from ragtide.errors import RagtideError
    from ragtide.registry import Registry

    settings = _settings(args)
    registry = Registry.from_entry_points(settings.plugins.allow)
    spec = settings.store
    if "migration_timeout_ms" in registry.config_fields(DocumentStore, spec.use):
        timeout_ms = int(args.timeout_s * 1000)
        spec = spec.model_copy(
            update={"config": {**spec.config, "migration_timeout_ms": timeout_ms}}
        )

    async def run() -> float:
        store: Any = registry.build(DocumentStore, spec, data_dir=settings.data_dir)
        began = time.perf_counter()
        await store.start()  # applies what the schema lacks, under the store's lock
        took = time.perf_counter() - began
        await store.aclose()
        return took

    try:
        took = asyncio.run(run())
    except RagtideError as exc:
        print(f"ragtide: {exc.message}", file=sys.stderr)
        return 1
    print(f"ragtide: the {spec.use} store's schema is up to date ({took:.1f} s)")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from ragtide.errors import RagtideError
    from ragtide.runtime import build_runtime

    settings = _settings(args)
    try:
        build_runtime(settings)
    except RagtideError as exc:
        print(f"ragtide: {exc.message}", file=sys.stderr)
        return 1
    print(settings.model_dump_json(indent=2))
    return 0


# --- bench / plan --------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from ragtide.bench.__main__ import main as bench_main

    return int(bench_main(args.bench_args))


def cmd_plan(args: argparse.Namespace) -> int:
    from ragtide.planner.cli import main as plan_main

    return int(plan_main(args.plan_args))


def cmd_tenants(args: argparse.Namespace) -> int:
    from ragtide.admin import cmd_tenants as run

    return run(_settings(args), args.action, args.file, args.prune)


def cmd_keys(args: argparse.Namespace) -> int:
    from ragtide.admin import cmd_keys as run

    return run(
        _settings(args),
        args.action,
        args.tenant,
        scopes=args.scope or ["read"],
        namespaces=args.only_namespace,
        expires_in_s=args.expires_in_days * 86_400 if args.expires_in_days else None,
        description=args.description,
        key_id=args.key_id,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragtide",
        description="Ragtide: retrieval-augmented chat over your own documents.",
        epilog="Every option is also an environment variable: RAGTIDE_<SECTION>__<NAME>.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", help="data directory (env RAGTIDE_DATA_DIR)")
        return p

    def with_namespace(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--namespace", "-n", help="namespace (env RAGTIDE_NAMESPACE; 'default')")
        p.add_argument("--tenant", help="the tenant whose namespace it is ('default')")
        return p

    def with_remote(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--url", help="use the Ragtide API at this URL instead of a local runtime")
        p.add_argument("--api-key", help="the API key for --url (env RAGTIDE_API_KEY)")
        return p

    p = with_data_dir(sub.add_parser("serve", help="run the HTTP service"))
    p.add_argument("--host", help="bind address (env RAGTIDE_HTTP__HOST)")
    p.add_argument("--port", type=int, help="port (env RAGTIDE_HTTP__PORT)")
    p.set_defaults(fn=cmd_serve)

    p = with_data_dir(sub.add_parser("worker", help="answer dialogue tasks from RabbitMQ"))
    p.add_argument("--host", dest="worker_host", help="probe address (env RAGTIDE_WORKER__HOST)")
    p.add_argument("--port", dest="worker_port", type=int, help="probe port (RAGTIDE_WORKER__PORT)")
    p.set_defaults(fn=cmd_worker)

    p = with_remote(with_namespace(with_data_dir(sub.add_parser("ingest", help="ingest files"))))
    p.add_argument("paths", nargs="*", help="files or directories")
    p.add_argument("--demo", action="store_true", help="also ingest the bundled demo corpus")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but refusals")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.add_argument(
        "--bulk",
        action="store_true",
        help="a first load: the store builds its search indexes after it (postgres; searches"
        " are slower, never wrong, meanwhile)",
    )
    p.set_defaults(fn=cmd_ingest)

    p = with_remote(with_namespace(with_data_dir(sub.add_parser("search", help="retrieval only"))))
    p.add_argument("query")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(fn=cmd_search)

    p = with_remote(
        with_namespace(with_data_dir(sub.add_parser("chat", help="chat in the terminal")))
    )
    p.add_argument("--message", "-m", action="append", help="ask this and exit (repeatable)")
    p.set_defaults(fn=cmd_chat)

    p = sub.add_parser("bench", help="run benchmarks (ragtide bench --help)", add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser(
        "plan", help="replay traffic through the HPA (ragtide plan --help)", add_help=False
    )
    p.add_argument("plan_args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_plan)

    p = sub.add_parser("plugins", help="list installed plugins")
    p.add_argument("action", choices=["list"], nargs="?", default="list")
    p.set_defaults(fn=cmd_plugins)

    p = with_data_dir(sub.add_parser("tenants", help="list tenants, or apply tenant files"))
    p.add_argument("action", choices=["list", "apply"])
    p.add_argument("-f", "--file", type=Path, help="directory of tenant files (apply)")
    p.add_argument("--prune", action="store_true", help="delete tenants no file names")
    p.set_defaults(fn=cmd_tenants)

    p = with_data_dir(sub.add_parser("keys", help="create, list or revoke API keys"))
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("key_id", nargs="?", help="the key to revoke")
    p.add_argument("--tenant", default="default")
    p.add_argument("--scope", action="append", choices=["read", "write", "admin"])
    p.add_argument(
        "--namespace",
        dest="only_namespace",
        action="append",
        help="limit the key to this namespace (repeatable)",
    )
    p.add_argument("--expires-in-days", type=float)
    p.add_argument("--description", default="")
    p.set_defaults(fn=cmd_keys)

    p = with_data_dir(sub.add_parser("migrate", help="bring the store's schema up to date"))
    p.add_argument(
        "--timeout-s",
        type=float,
        default=86_400.0,
        help="bound on each migration statement (default a day; replicas use 300 s)",
    )
    p.set_defaults(fn=cmd_migrate)
    p = with_data_dir(sub.add_parser("config", help="validate settings and plugins"))
    p.add_argument("action", choices=["check"], nargs="?", default="check")
    p.set_defaults(fn=cmd_config_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os

    # One BLAS thread per process: a replica serves many small requests on one event
    # loop, and OpenBLAS threads spinning for tiny products slow everything down when
    # the cores are busy (measured: a 8k x 256 product went from 0.3 ms to 16 ms).
    # Must be set before numpy is imported; an explicit setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("bench", "plan"):  # they parse their own options, --help too
        namespace = argparse.Namespace(bench_args=argv[1:], plan_args=argv[1:])
        return cmd_bench(namespace) if argv[0] == "bench" else cmd_plan(namespace)
    args = _parser().parse_args(argv)
    result: int = args.fn(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
