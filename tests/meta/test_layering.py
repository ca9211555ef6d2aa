"""The core never imports its edges: api, server, cli, worker, bench or builtin plugins."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "ragtide"
CORE = [
    "types",
    "errors",
    "components",
    "text",
    "prompts",
    "chat",
    "registry",
    "settings",
    "runtime",
    "observability",
    "caching",
    "access",
    "support",
    "grounding",
    "citations",
    "tenants",
    "tenant_config",
    "audit",
]
EDGES = (
    "ragtide.api",
    "ragtide.server",
    "ragtide.cli",
    "ragtide.bench",
    "ragtide.builtin",
    "ragtide.planner",
    "ragtide.worker",
    "ragtide.grpc",
    "ragtide.mcp",
    "ragtide.client",
)
SPI = ["types", "errors", "components", "access"]


def _imports(module: str) -> set[str]:
    tree = ast.parse((SRC / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_does_not_import_edges() -> None:
    for module in CORE:
        bad = {n for n in _imports(module) if n.startswith(EDGES)}
        assert not bad, f"ragtide.{module} imports {bad}"


def test_spi_imports_only_spi() -> None:
    for module in SPI:
        own = {n for n in _imports(module) if n.startswith("ragtide")}
        assert own <= {f"ragtide.{m}" for m in SPI}, (module, own)


def test_builtin_plugins_use_only_the_spi() -> None:
    allowed = (
        "ragtide.types",
        "ragtide.access",
        "ragtide.errors",
        "ragtide.components",
        "ragtide.text",
        "ragtide.caching",
        "ragtide.prompts",
        "ragtide.testing",
        "ragtide.builtin",
        # All metrics live in one module; a store that keeps a budget counts its evictions
        # there, as a third-party plugin may.
        "ragtide.observability",
        # The one support scorer: the extractive answerer and the LLM path verify with it.
        "ragtide.support",
    )
    for path in (SRC / "builtin").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("ragtide")
            ):
                assert node.module.startswith(allowed), (path.name, node.module)


def test_importing_ragtide_is_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ragtide; "
        "print(sorted(m for m in ('fastapi', 'numpy', 'apsw') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
