"""A scripted OpenAI-compatible server on loopback, for tests of the ``openai`` serving backend.

It speaks the wire format (``/v1/models``, streamed ``/v1/completions``, llama.cpp's
``/lora-adapters``, vLLM's ``/v1/load_lora_adapter``), replays scripted text and records every
request, so tests check what the client sends as well as what it makes of the answers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from core.prompts import FINAL_ANSWER_MARKER


@dataclass
class Scripted:
    """What the stand-in server does; tests change it between requests."""

    owned_by: str = "llamacpp"
    models: list[str] = field(default_factory=lambda: ["smollm2"])
    loras: list[dict[str, Any]] = field(default_factory=list)
    load_status: int = 200
    status: int = 200
    first_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    respond: Callable[[dict[str, Any]], list[Any]] = lambda body: [("Reasoning.\n\n" + FINAL_ANSWER_MARKER + " B.", "stop")]
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0
    streaming: int = 0
    most_streaming: int = 0
    """The most completions streamed at the same time."""
    url: str = ""
    gate: threading.Barrier | None = None
    """When set, each completion waits (at most 5 s) until as many are open as the barrier's parties."""


def _handler(script: Scripted) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": m, "owned_by": script.owned_by} for m in script.models]})
            elif self.path == "/lora-adapters":
                self._json(200, script.loras)
            else:
                self._json(404, {"error": "no such path"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            if self.path == "/v1/load_lora_adapter":
                self._json(script.load_status, {"ok": script.load_status == 200})
                if script.load_status == 200:
                    script.models.append(body["lora_name"])
                return
            if script.status != 200:
                self._json(script.status, {"error": {"message": "the scripted server fails"}})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            script.streaming += 1
            script.most_streaming = max(script.most_streaming, script.streaming)
            time.sleep(script.first_delay_s)
            if script.gate is not None:
                try:
                    script.gate.wait(timeout=5)
                except threading.BrokenBarrierError:
                    pass
            try:
                for item in script.respond(body):
                    if isinstance(item, bytes):
                        line = item
                    else:
                        text, finish = item
                        chunk = {"choices": [{"index": 0, "text": text, "finish_reason": finish}]}
                        line = b"data: " + json.dumps(chunk).encode() + b"\n\n"
                    self.wfile.write(line)
                    self.wfile.flush()
                    time.sleep(script.chunk_delay_s)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                script.disconnects += 1
            finally:
                script.streaming -= 1
            self.close_connection = True

    return Handler


@contextmanager
def scripted_server() -> Iterator[Scripted]:
    """A running scripted server; ``.url`` is its ``/v1`` root."""
    script = Scripted()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield script
    finally:
        httpd.shutdown()
        httpd.server_close()
