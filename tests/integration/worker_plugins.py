"""A chat model for the worker tests, registered through a test-only entry point.

``test_worker.py`` writes a ``*.dist-info`` with an entry point for ``GatedChatModel``
and puts it on the workers' ``PYTHONPATH``, so real ``ragtide worker`` processes load it
exactly as they load any plugin. It makes a worker's state observable from outside:

- a message containing ``[gate]`` writes ``started-<pid>-<n>`` into ``dir`` and then
  waits until the file ``release`` exists: the test knows which worker is mid-task and
  decides when it may finish;
- a message containing ``[fail]`` always fails (an ``UpstreamError``: worth retrying);
- anything else is answered at once.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

from pydantic import BaseModel

from ragtide.errors import UpstreamError, UpstreamTimeout
from ragtide.types import Prompt, Reply

__all__ = ["GatedChatModel"]

GATE_TIMEOUT_S = 120.0


class GatedChatModel:
    class Config(BaseModel):
        dir: str

    def __init__(self, config: Config) -> None:
        self._dir = Path(config.dir)
        self._count = itertools.count()

    @property
    def model_id(self) -> str:
        return "gated"

    async def _wait_for_release(self) -> None:
        n = next(self._count)
        marker = self._dir / f"started-{os.getpid()}-{n}"
        partial = self._dir / f".{marker.name}.partial"  # not matched by started-*
        partial.write_text(str(os.getpid()))
        partial.rename(marker)  # appears whole
        release = self._dir / "release"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATE_TIMEOUT_S
        while not release.exists():
            if loop.time() > deadline:
                raise UpstreamTimeout("the test never released the gate")
            await asyncio.sleep(0.01)

    async def generate(self, prompt: Prompt) -> Reply:
        if "[fail]" in prompt.message:
            raise UpstreamError("this task always fails")
        if "[gate]" in prompt.message:
            await self._wait_for_release()
        return Reply(f"answer to: {prompt.message}")

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        reply = await self.generate(prompt)
        yield reply.text
