"""A small Dockerfile reader: stages, instructions, heredocs, exec-form arguments, ENV.

The image is checked by reading its Dockerfile the way BuildKit does: parser directives
(``# syntax=...`` before anything else) kept, other comments and blank lines dropped,
``\\`` continuations joined, ``<<EOF`` heredocs attached to their instruction (so a test
can insist there are none: builders without BuildKit reject them), ``ARG`` defaults
substituted into ``FROM``. tests/deploy/test_image_run.py builds and runs the real image.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Dockerfile", "Instruction", "Stage", "dockerignored", "parse"]

_DIRECTIVE = re.compile(r"#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(\S.*?)\s*$")
_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the rest of the (joined) line
    heredocs: tuple[str, ...] = ()
    line: int = 0

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form's arguments, or None for the shell form."""
        text = self.value.strip()
        if not text.startswith("["):
            return None
        parsed = json.loads(text)
        assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
        return parsed

    def flags(self) -> dict[str, str]:
        """``--from=build``-style flags at the start of the value."""
        out: dict[str, str] = {}
        for word in shlex.split(self.value):
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            out[name] = value
        return out

    def words(self) -> list[str]:
        """The value split like a shell would, flags removed."""
        return [w for w in shlex.split(self.value) if not w.startswith("--")]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def index(self, predicate: object) -> int:
        """Position of the first instruction for which ``predicate(instruction)`` holds."""
        for n, instruction in enumerate(self.instructions):
            if predicate(instruction):  # type: ignore[operator]
                return n
        raise AssertionError("no such instruction")

    def env(self, inherited: dict[str, str] | None = None) -> dict[str, str]:
        """ENV as the stage ends, ``$VAR`` expanded against earlier values."""
        env = dict(inherited or {})
        for instruction in self.all("ENV"):
            words = shlex.split(instruction.value)
            if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV KEY value`
                words = [f"{words[0]}={' '.join(words[1:])}"]
            for word in words:
                key, _, value = word.partition("=")
                env[key] = _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)
        return env


@dataclass
class Dockerfile:
    stages: list[Stage]
    args: dict[str, str]  # global ARG defaults (before the first FROM)
    directives: dict[str, str] = field(default_factory=dict)  # e.g. {"syntax": "docker/..."}

    @property
    def instructions(self) -> list[Instruction]:
        return [i for stage in self.stages for i in stage.instructions]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


def _logical_lines(text: str) -> list[tuple[int, str, tuple[str, ...]]]:
    lines = text.splitlines()
    out: list[tuple[int, str, tuple[str, ...]]] = []
    n = 0
    while n < len(lines):
        start = n
        raw = lines[n]
        n += 1
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        joined = raw
        while joined.rstrip().endswith("\\") and n < len(lines):
            nxt = lines[n]
            n += 1
            if nxt.lstrip().startswith("#"):  # comments inside a continuation are dropped
                continue
            joined = joined.rstrip()[:-1] + " " + nxt.strip()
        heredocs: list[str] = []
        for match in _HEREDOC.finditer(joined):
            strip_tabs, word = match.group(1) == "-", match.group(3)
            body: list[str] = []
            while n < len(lines) and lines[n].strip() != word:
                body.append(lines[n].lstrip("\t") if strip_tabs else lines[n])
                n += 1
            assert n < len(lines), f"heredoc {word} opened on line {start + 1} never ends"
            n += 1
            heredocs.append("\n".join(body) + "\n")
        out.append((start + 1, joined.strip(), tuple(heredocs)))
    return out


def _directives(text: str) -> dict[str, str]:
    """Parser directives: ``# syntax=...``-style lines at the very top (a blank line,
    another comment, an unknown directive or an instruction ends them)."""
    found: dict[str, str] = {}
    for raw in text.splitlines():
        match = _DIRECTIVE.fullmatch(raw.strip())
        if (
            not match
            or match.group(1).lower() not in _DIRECTIVES
            or match.group(1).lower() in found
        ):
            break
        found[match.group(1).lower()] = match.group(2)
    return found


def parse(path: Path) -> Dockerfile:
    stages: list[Stage] = []
    args: dict[str, str] = {}
    source = path.read_text()
    for line, text, heredocs in _logical_lines(source):
        keyword, _, value = text.partition(" ")
        instruction = Instruction(keyword.upper(), value.strip(), heredocs, line)
        if instruction.keyword == "FROM":
            words = instruction.words()
            base = _VAR.sub(lambda m: args.get(m.group(1) or m.group(2), ""), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
            continue
        if instruction.keyword == "ARG" and not stages:
            key, _, default = instruction.value.partition("=")
            args[key.strip()] = default.strip()
            continue
        assert stages, f"line {line}: {instruction.keyword} before any FROM"
        stages[-1].instructions.append(instruction)
    return Dockerfile(stages, args, _directives(source))


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` patterns exclude ``path`` (last match wins, ``!`` re-includes)."""
    excluded = False
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        candidates = [pat, pat.removeprefix("**/")] if pat.startswith("**/") else [pat]
        for candidate in candidates:
            glob = candidate.replace("**/", "*/")
            if any(fnmatch.fnmatchcase(p, glob) for p in prefixes) or (
                candidate != pat and any(fnmatch.fnmatchcase(part, glob) for part in parts)
            ):
                excluded = not negate
                break
    return excluded
