"""What the built-in embedders share: weights from pip packages, checked and loaded once.

None of the models downloads anything: they read weights that pip packages ship and check
the weights' sha256 before use (``ConfigError`` on a mismatch or a missing package).
Loaded weights are shared by every instance in the process that uses the same file.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from ragtide.components import Vectors
from ragtide.errors import ConfigError

__all__ = [
    "INLINE_CHARS",
    "MINILM_SHA256",
    "WORDLLAMA_SHA256",
    "embed_inline_or_threaded",
    "existing_file",
    "normalize_rows",
    "not_started",
    "package_dir",
    "shared_model",
    "verify_sha256",
]

WORDLLAMA_SHA256 = "64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

INLINE_CHARS = 4096  # up to this much text (~1 ms), the event loop beats a thread hop
_M = TypeVar("_M")


# ---------------------------------------------------------------- shared helpers


def package_dir(package: str) -> Path | None:
    """The installed package's directory, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def existing_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{what} not found at {path}")
    return path


def verify_sha256(path: Path, expected: str) -> None:
    with existing_file(path, "model weights").open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != expected:
        raise ConfigError(
            f"model weights {path} are corrupt or not the expected model: "
            f"sha256 {digest}, expected {expected}"
        )


_shared: weakref.WeakValueDictionary[tuple[object, ...], object] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def shared_model(path: Path, load: Callable[[Path], _M]) -> _M:
    """Load a model once per process and file version; it is freed when no embedder holds it."""
    stat = path.stat()
    key = (load, path.resolve(), stat.st_size, stat.st_mtime_ns)
    with _shared_lock:
        model = _shared.get(key)
        if model is None:
            model = load(path)
            _shared[key] = model
    return model  # type: ignore[return-value]  # the key's loader made it


def normalize_rows(x: Vectors) -> Vectors:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


async def embed_inline_or_threaded(
    embed: Callable[[Sequence[str]], Vectors], texts: Sequence[str], inline: int
) -> Vectors:
    if isinstance(texts, str):
        raise TypeError("embed_documents takes a sequence of texts, not one str")
    if sum(map(len, texts)) <= inline:
        return embed(texts)
    return await asyncio.to_thread(embed, texts)


def not_started(component: object) -> RuntimeError:
    name = type(component).__name__
    return RuntimeError(f"{name} is not started: await {name}.start() before embedding")
