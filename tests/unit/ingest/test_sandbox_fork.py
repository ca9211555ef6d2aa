"""A process forked from one that has used the shared parse sandbox gets a sandbox of its
own: the inherited one has no threads in the child, and a job queued on it would wait
forever (as mutmut's forked test runs once did)."""

from __future__ import annotations

import asyncio
import os
import signal

from ragtide.ingest.prepare import Prepared, PrepareJob
from ragtide.ingest.sandbox import SandboxConfig, close_shared_sandboxes, shared_sandbox
from ragtide.testing.bombs import docx_bytes

CONFIG = SandboxConfig(workers=1, memory_bytes=256 * 1024 * 1024, timeout_s=10.0)
GUARD_S = 60  # the child is killed by SIGALRM if its job never comes back


def _parse(text: str) -> list[str]:
    [doc] = asyncio.run(shared_sandbox(CONFIG).run(PrepareJob("a.docx", docx_bytes(text))))
    assert isinstance(doc, Prepared)
    return [c.text for c in doc.chunks]


def test_a_forked_child_parses_with_a_sandbox_of_its_own() -> None:
    parent_box = shared_sandbox(CONFIG)
    try:
        assert _parse("In the parent.") == ["In the parent."]
        assert parent_box.pids  # its thread and worker run
        pid = os.fork()
        if pid == 0:  # the child: report by exit status only, never return into pytest
            status = 1
            try:
                signal.alarm(GUARD_S)
                child_box = shared_sandbox(CONFIG)
                fresh = child_box is not parent_box and child_box.pids == []
                status = 0 if fresh and _parse("In the child.") == ["In the child."] else 2
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert not os.WIFSIGNALED(status), "the child's job never came back"
        assert os.WEXITSTATUS(status) == 0
        # The parent's sandbox is untouched by the child's.
        assert shared_sandbox(CONFIG) is parent_box
        assert _parse("Still the parent.") == ["Still the parent."]
    finally:
        asyncio.run(close_shared_sandboxes())
