"""The bare baseline the server bench compares against: FastAPI + uvicorn + numpy.

No framework, no store, no pipeline: the corpus and its vectors are loaded from files
at start-up and every query is one brute-force matrix product. Run as
``python -m ragtide.bench.baseline_app CORPUS.jsonl VECTORS.npy PORT``. It imports
nothing from Ragtide, so it measures only what any Python search service pays.
"""

from __future__ import annotations

import json
import sys
from contextlib import asynccontextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from safetensors.numpy import load_file
from tokenizers import Tokenizer


class SearchRequest(BaseModel):
    query: str
    top_k: int = 5


def build(corpus: Path, vectors: Path) -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        origin = find_spec("wordllama").origin  # type: ignore[union-attr]
        root = Path(str(origin)).parent
        tok = Tokenizer.from_file(str(root / "tokenizers" / "l2_supercat_tokenizer_config.json"))
        table = load_file(str(root / "weights" / "l2_supercat_256.safetensors"))
        state["tok"] = tok
        state["table"] = next(iter(table.values())).astype(np.float32)
        state["docs"] = [json.loads(line) for line in corpus.open()]
        state["matrix"] = np.load(vectors)
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/search")
    async def search(body: SearchRequest) -> dict[str, Any]:
        ids = state["tok"].encode(body.query, add_special_tokens=False).ids
        q = state["table"][ids].mean(axis=0) if ids else np.zeros(state["table"].shape[1])
        q = q / (np.linalg.norm(q) or 1.0)
        scores = state["matrix"] @ q.astype(np.float32)
        top = np.argsort(-scores)[: body.top_k]
        docs = state["docs"]
        return {
            "results": [
                {
                    "document_id": docs[i]["_id"],
                    "title": docs[i].get("title", ""),
                    "text": docs[i]["text"],
                    "score": float(scores[i]),
                }
                for i in top
            ]
        }

    return app


if __name__ == "__main__":
    corpus_path, vectors_path, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    uvicorn.run(
        build(corpus_path, vectors_path),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
