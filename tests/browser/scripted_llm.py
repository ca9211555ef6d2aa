"""An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 whose answers the test knows.

It streams ``REPLY`` (one sentence the documents hold, one they do not) for any question,
except one that contains ``HOLD``: that one gets the ``FIRST`` tokens at once and then waits
until ``release`` is set or the client hangs up (recorded in ``disconnected``), like
``SlowLLM`` in tests/integration/test_streams.py. A real HTTP server: Ragtide's ``openai``
chat model talks to it as to any LLM server.
"""

from __future__ import annotations

import json
import select
import socket
import socketserver
import threading

HOLD = "slowly"
FIRST = ["Bread ", "rises ", "while "]
REPLY = (
    "Bread is baked from flour, water, salt and yeast [1]. "
    "The moon is made of green cheese and orbits the bakery [1]."
)


def _chunk(content: str) -> bytes:
    body = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class ScriptedLLM:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.stopping = threading.Event()
        self.questions: list[str] = []
        self.disconnected: list[str] = []
        llm = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.rfile.readline()  # the request line
                length = 0
                while line := self.rfile.readline().strip():
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = json.loads(self.rfile.read(length))
                question = body["messages"][-1]["content"]
                llm.questions.append(question)
                if not body.get("stream"):
                    message = {"role": "assistant", "content": REPLY}
                    reply = {
                        "object": "chat.completion",
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    }
                    data = json.dumps(reply).encode()
                    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    self.wfile.write(head + b"content-length: %d\r\n\r\n" % len(data) + data)
                    return
                head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                self.wfile.write(head + b"connection: close\r\n\r\n")
                if HOLD in question:
                    self.wfile.write(b"".join(_chunk(t) for t in FIRST))
                    self.wfile.flush()
                    if not llm.hold(self.connection):
                        llm.disconnected.append(question)
                        return
                    words = ["to ", "bread."]
                else:
                    words = [w + " " for w in REPLY.split(" ")]
                self.wfile.write(b"".join(_chunk(w) for w in words) + b"data: [DONE]\n\n")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hold(self, conn: socket.socket) -> bool:
        """Wait for ``release`` (True) or for the client to hang up (False)."""
        while not self.release.is_set() and not self.stopping.is_set():
            readable, _, _ = select.select([conn], [], [], 0.01)
            if readable:
                try:
                    if not conn.recv(1):  # EOF: the client closed its end
                        return False
                except OSError:  # reset
                    return False
        return not self.stopping.is_set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
