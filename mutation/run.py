"""Mutation testing of Ragtide's core modules with mutmut 3 (``scripts/mutation``).

For each module named on the command line (all of ``MODULES`` by default) this copies
``src/``, ``tests/`` and ``pyproject.toml`` into a scratch directory (the work tree is never
touched, so concurrent edits and ``mutants/`` stay out of it), points ``[tool.mutmut]`` at
that module's files and fast tests, runs ``mutmut run``, and writes

* ``mutation/reports/<module>.md``: the score and every surviving mutant's diff, each
  marked with the reason it is accepted (``mutation/accepted.toml``) or as NOT ACCEPTED;
* ``mutation/scores.json``: killed / total per module (a timeout counts as killed).

A survivor that is not accepted is a test to write (or a reason to record). The exit
status is 1 when a module's score is below ``--min-score`` (default 85%) or a survivor
is not accepted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "mutation"
FAST = ["-p", "no:cacheprovider", "-q", "-x"]


@dataclass(frozen=True)
class Module:
    files: tuple[str, ...]  # globs under src/, as mutmut's only_mutate
    tests: tuple[str, ...]  # the fast tests that cover them
    markers: str = "not integration"  # pytest -m


MODULES: dict[str, Module] = {
    "retrievers": Module(
        ("src/ragtide/builtin/retrievers.py",),
        ("tests/unit/builtin/test_retrievers.py",),
    ),
    "bm25": Module(
        ("src/ragtide/builtin/bm25.py",),
        ("tests/unit/builtin/test_bm25.py",),
    ),
    "chunking": Module(
        ("src/ragtide/ingest/chunking.py",),
        ("tests/unit/ingest/test_chunking.py", "tests/unit/test_chunking_bounds.py"),
    ),
    "pipeline": Module(
        ("src/ragtide/ingest/pipeline.py",),
        (
            "tests/unit/ingest/test_pipeline.py",
            "tests/unit/ingest/test_local_files.py",
            "tests/api/test_ingest_defaults.py",
            "tests/api/test_documents.py",
        ),
    ),
    "chat": Module(
        ("src/ragtide/chat.py",),
        # Every fast test that reaches chat.py (not all of tests/unit: its stats run alone
        # took minutes on a busy machine).
        (
            "tests/unit/test_chat.py",
            "tests/unit/test_chat_tokens.py",
            "tests/unit/test_chat_grounding.py",
            "tests/unit/test_support.py",
            "tests/unit/worker/test_execute.py",
            "tests/api/test_chat.py",
            "tests/api/test_openai_compat.py",
        ),
    ),
    "errors": Module(
        ("src/ragtide/api/errors.py", "src/ragtide/api/limits.py"),
        (
            "tests/meta/test_error_table.py",
            "tests/api/test_error_table.py",
            "tests/api/test_in_flight_limit.py",
            "tests/api/test_error_messages.py",
            "tests/api/test_openapi.py",
            "tests/unit/api/test_errors.py",
            "tests/unit/api/test_limits.py",
        ),
    ),
    "error_tree": Module(
        ("src/ragtide/errors.py",),
        ("tests/unit/test_errors.py", "tests/meta/test_error_table.py"),
    ),
    "ratelimit": Module(
        ("src/ragtide/builtin/ratelimit.py",),
        # The Redis limiter's contract runs against the local Redis: milliseconds a test.
        (
            "tests/unit/builtin/test_ratelimit.py",
            "tests/contract/test_redis_ratelimit.py",
            "tests/api/test_cache_and_limits.py",
        ),
        markers="not cluster",
    ),
    "hpa": Module(
        ("src/ragtide/planner/hpa/*",),
        (
            "tests/planner/test_hpa_controller.py",
            "tests/planner/test_hpa_vectors.py",
            "tests/planner/test_hpa_properties.py",
            "tests/planner/test_hpa_random_specs.py",
            "tests/planner/test_hpa_validation.py",
            "tests/planner/test_hpa_edges.py",
        ),
    ),
}

KILLED = {"killed", "timeout"}
UNCHECKED = {"not checked"}  # a run stopped at --timeout before it reached them
LINE = re.compile(r"^\s*(\S+): (.+)$")


def _existing(paths: tuple[str, ...]) -> list[str]:
    return [p for p in paths if (ROOT / p).exists()]


# mutmut runs the tests once in its own process, then forks a child per mutant. A process
# forked after the shared parse sandbox started inherits the sandbox without its threads,
# and every upload a worker would parse then waits forever (each surviving mutant of a
# function such a test reaches became a timeout, counted as killed). This plugin, loaded
# with -p in the scratch copy only, forgets the inherited sandboxes in each child: the
# child's first upload starts its own.
_FORK_PLUGIN = '''"""Loaded by scripts/mutation (mutation/run.py) in its scratch copy: see there."""

import os

_registered = False


def pytest_configure(config):
    global _registered
    if not _registered:
        from ragtide.ingest import sandbox

        os.register_at_fork(after_in_child=sandbox._shared.clear)
        _registered = True
'''
FORK_PLUGIN = "tests.mutation_fork_safety"


def _mutmut_section(module: Module) -> str:
    def arr(items: list[str] | tuple[str, ...]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    base = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {}).get("mutmut", {})
    given = list(base.get("pytest_add_cli_args", []))
    if "-m" in given:  # the module's marker expression replaces the default one
        del given[given.index("-m") : given.index("-m") + 2]
    extra = [a for a in given if a not in FAST]
    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src/ragtide"]\n'
        'also_copy = ["README.md"]\n'
        f"only_mutate = {arr(module.files)}\n"
        f"pytest_add_cli_args = {arr(['-m', module.markers, '-p', FORK_PLUGIN, *FAST, *extra])}\n"
        f"pytest_add_cli_args_test_selection = {arr(_existing(module.tests))}\n"
        f"timeout_multiplier = {base.get('timeout_multiplier', 15.0)}\n"
        f"timeout_constant = {base.get('timeout_constant', 5.0)}\n"
    )


COPIED = ("src", "tests", "pyproject.toml", "README.md")  # README: tests/api/test_error_table.py


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def _prepare(name: str, module: Module, scratch: Path, worktree: bool) -> Path:
    """The scratch copy: the committed tree (HEAD) by default, so that other people's
    edits in progress in the work tree neither break the run nor change what is scored;
    ``worktree`` copies the work tree as it is instead."""
    work = scratch / name
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("src", "tests"):
        shutil.rmtree(work / sub, ignore_errors=True)
    if worktree:
        for sub in ("src", "tests"):
            shutil.copytree(
                ROOT / sub, work / sub, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        for file in COPIED[2:]:
            shutil.copy2(ROOT / file, work / file)
    else:
        tar = subprocess.run(
            ["git", "archive", "--format=tar", "HEAD", *COPIED],
            cwd=ROOT, capture_output=True, check=True,
        )  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as archive:
            archive.extractall(work, filter="data")
    (work / "tests" / "mutation_fork_safety.py").write_text(_FORK_PLUGIN)
    text = (work / "pyproject.toml").read_text()
    text = re.sub(r"\n\[tool\.mutmut\]\n(?:(?!\n\[).)*", "\n", text, flags=re.S)
    (work / "pyproject.toml").write_text(text + _mutmut_section(module))
    (work / "source.txt").write_text("work tree\n" if worktree else f"commit {_commit()}\n")
    return work


def _mutmut(work: Path, *args: str, timeout: float | None = None) -> str:
    """Run mutmut; past ``timeout`` seconds stop it and every process it started (its
    children, their parse workers): the mutants it did not reach stay "not checked"."""
    exe = str(Path(sys.executable).with_name("mutmut"))
    proc = subprocess.Popen(
        [exe, *args], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        out += f"\n[mutation] stopped after {timeout:.0f} s (--timeout)\n"
    return out


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant
out = {}
for name in json.load(sys.stdin):
    out[name] = get_diff_for_mutant(name, path=find_mutant(name).path).strip()
print(json.dumps(out))
"""


def _diffs(work: Path, names: list[str]) -> dict[str, str]:
    """Each mutant's diff, from one interpreter (``mutmut show`` costs seconds each)."""
    if not names:
        return {}
    done = subprocess.run(
        [sys.executable, "-c", _DIFFS], cwd=work, input=json.dumps(names),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    diffs: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return diffs


def _statuses(work: Path) -> dict[str, str]:
    statuses: dict[str, str] = {}
    for line in _mutmut(work, "results", "--all", "true").splitlines():
        m = LINE.match(line)
        if m and "__mutmut_" in m.group(1):
            statuses[m.group(1)] = m.group(2).strip()
    return statuses


def _survivors(work: Path) -> list[str]:
    if not (work / "mutants").exists():
        return []
    # not the unchecked ones of a stopped run: a plain run (no --fresh) goes on with those
    return sorted(n for n, s in _statuses(work).items() if s not in KILLED | UNCHECKED)


def _accepted() -> dict[str, Any]:
    path = HERE / "accepted.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def _reason(module: str, name: str, diff: str, accepted: dict[str, Any]) -> str | None:
    """Why ``name`` may survive: its own entry, or the first rule its diff matches."""
    entry = accepted.get("mutants", {}).get(name)
    if entry:
        return str(entry["reason"])
    lines = [line for line in diff.splitlines() if not line.startswith(("+++", "---"))]
    added = "\n".join(line[1:] for line in lines if line.startswith("+"))
    removed = "\n".join(line[1:] for line in lines if line.startswith("-"))
    for rule in accepted.get("rules", []):
        if rule.get("module", module) != module:
            continue
        if "name" in rule and not re.search(rule["name"], name):
            continue
        if "added" in rule and not re.search(rule["added"], added):
            continue
        if "removed" in rule and not re.search(rule["removed"], removed):
            continue
        return f"{rule['reason']} (rule: {rule['id']})"
    return None


def _report(name: str, module: Module, work: Path, seconds: float) -> dict[str, object]:
    statuses = _statuses(work)
    total = len(statuses)
    unchecked = sorted(n for n, s in statuses.items() if s in UNCHECKED)
    checked = total - len(unchecked)
    killed = sum(1 for s in statuses.values() if s in KILLED)
    accepted = _accepted()
    survivors = sorted(n for n, s in statuses.items() if s not in KILLED | UNCHECKED)
    diffs = _diffs(work, survivors)
    reasons = {n: _reason(name, n, diffs[n], accepted) for n in survivors}
    unexplained = [n for n in survivors if reasons[n] is None]
    score = killed / checked if checked else 0.0
    source_file = work / "source.txt"
    source = source_file.read_text().strip() if source_file.exists() else "unknown"
    out = [
        f"# Mutation report: {name}",
        "",
        f"Files: {', '.join(module.files)}  ",
        f"Source: {source}  ",
        f"Tests: {', '.join(module.tests)} (`-m '{module.markers}' {' '.join(FAST)}`)  ",
        f"Killed {killed} of {checked} mutants: **{score:.1%}**; "
        f"{len(survivors)} survive, {len(survivors) - len(unexplained)} of them accepted "
        f"(mutation/accepted.toml), {len(unexplained)} not ({seconds:.0f} s).",
        "",
    ]
    if unchecked:
        out += [
            f"**Incomplete**: {len(unchecked)} of {total} mutants were not checked (the run "
            "was stopped at --timeout); the score is over the checked ones. Not checked: "
            + ", ".join(f"`{n.rpartition('.')[2]}`" for n in unchecked[:40])
            + (", ..." if len(unchecked) > 40 else ""),
            "",
        ]
    for n in sorted(survivors, key=lambda n: reasons[n] is not None):  # unexplained first
        reason = reasons[n] or "**NOT ACCEPTED**: write a test, or a reason in accepted.toml"
        out += [f"## `{n}` ({statuses[n]})", "", f"{reason}", "", "```diff", diffs[n], "```", ""]
    (HERE / "reports").mkdir(exist_ok=True)
    (HERE / "reports" / f"{name}.md").write_text("\n".join(out))
    return {
        "killed": killed,
        "total": checked,
        "not_checked": len(unchecked),
        "score": round(score, 4),
        "survivors": survivors,
        "not_accepted": unexplained,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"of {', '.join(MODULES)}")
    parser.add_argument("--jobs", type=int, default=2, help="mutmut --max-children")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per module")
    parser.add_argument("--min-score", type=float, default=0.85)
    parser.add_argument("--fresh", action="store_true", help="forget earlier results first")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the reports from the last run"
    )
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="re-test only the last run's survivors, with the current tests (after new tests)",
    )
    parser.add_argument(
        "--unaccepted",
        action="store_true",
        help="with --survivors: re-test only the survivors accepted.toml does not accept "
        "(an accepted one is equivalent: new tests cannot kill it, and re-running it costs "
        "a full run of its tests)",
    )
    parser.add_argument(
        "--worktree",
        action="store_true",
        help="test the work tree as it is, not the last commit (HEAD)",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        default=Path(os.environ.get("RAGTIDE_MUTATION_DIR", "/tmp/ragtide-mutation")),
        help="where the copies and mutmut's state live (kept: reruns are incremental)",
    )
    args = parser.parse_args()
    names = args.modules or list(MODULES)
    unknown = set(names) - set(MODULES)
    if unknown:
        parser.error(f"unknown modules {sorted(unknown)}; known: {list(MODULES)}")
    scores_path = HERE / "scores.json"
    scores_now: dict[str, Any] = {}
    low = []
    for name in names:
        module = MODULES[name]
        start = time.monotonic()
        work = args.scratch / name
        if not args.report_only:
            if args.fresh:
                shutil.rmtree(work / "mutants", ignore_errors=True)
            again = _survivors(work) if args.survivors else []
            if again and args.unaccepted:
                accepted, diffs = _accepted(), _diffs(work, again)
                again = [n for n in again if _reason(name, n, diffs[n], accepted) is None]
            work = _prepare(name, module, args.scratch, args.worktree)
            if args.survivors and not again:
                log = "no survivors to re-test"
            else:
                print(f"[mutation] {name}: mutmut run in {work}", flush=True)
                log = _mutmut(
                    work, "run", "--max-children", str(args.jobs), *again, timeout=args.timeout
                )
            (work / "mutmut-run.log").write_text(log)
            if "failed to collect stats" in log or "Failed to run clean test" in log:
                print(log[-3000:], file=sys.stderr)
                raise SystemExit(f"[mutation] {name}: the tests fail without mutants; see above")
        entry = _report(name, module, work, time.monotonic() - start)
        scores_now[name] = {k: entry[k] for k in ("killed", "total", "score")} | {
            "not_accepted": len(entry["not_accepted"]),  # type: ignore[arg-type]
            "not_checked": entry["not_checked"],
        }
        print(
            f"[mutation] {name}: killed {entry['killed']}/{entry['total']} "
            f"({entry['score']:.1%}), not accepted: {len(entry['not_accepted'])}",  # type: ignore[arg-type]
            flush=True,
        )
        if entry["score"] < args.min_score or entry["not_accepted"] or entry["not_checked"]:  # type: ignore[operator]
            low.append(name)
    # Merged into the file as it is now, not as it was when this (long) run began.
    scores = (json.loads(scores_path.read_text()) if scores_path.exists() else {}) | scores_now
    scores.pop("_all", None)
    killed = sum(s["killed"] for s in scores.values())
    total = sum(s["total"] for s in scores.values())
    scores["_all"] = {"killed": killed, "total": total, "score": round(killed / total, 4)}
    scores_path.write_text(json.dumps(dict(sorted(scores.items())), indent=2) + "\n")
    print(f"[mutation] all modules: killed {killed}/{total} ({killed / total:.1%})")
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
