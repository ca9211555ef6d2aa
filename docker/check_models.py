"""The baked-in embedding models load and answer: run by the Dockerfile's build stage.

Each embedder the settings can name (``static``, ``minilm``) is found by its entry-point
name, started (which loads its weights and checks their sha256, raising ConfigError on a
mismatch) and asked for one vector. Any failure exits non-zero and so fails the build,
not the first pod.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points

EMBEDDERS = entry_points(group="ragtide.embedders")
BAKED_IN = ("static", "minilm")


async def check() -> None:
    for name in BAKED_IN:
        cls = EMBEDDERS[name].load()
        embedder = cls(cls.Config())
        await embedder.start()
        vectors = await embedder.embed_query("readiness probe")
        assert vectors.shape[-1] == embedder.dimension, (name, vectors.shape)
        await embedder.aclose()
        print(f"embedder {name}: {embedder.model_id}, {embedder.dimension} dimensions")


if __name__ == "__main__":
    asyncio.run(check())
