"""A real HTTP server on 127.0.0.1 that speaks Gemini's generateContent REST API with scripted replies (point
GEMINI_BASE_URL at `FakeGemini().url`), and the texts the tests script it with."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = "AIzaTEST-secret-key-0123456789"
MODEL = "gemini-2.5-flash"
CAPTION = (
    "A man in a blue denim jacket and grey jeans walks across a sunny park lawn, waves with his right hand "
    "and picks up a red frisbee from the grass while a dog runs past behind him."
)
PROMPT = " ".join(
    ["A tall woman with long silver hair, a green linen dress and brown sandals walks across a sunny park lawn."]
    + ["She waves her right hand, bends down, and lifts a red frisbee from the short grass as a dog runs behind."] * 4
    + ["The camera follows her in a steady medium shot under bright midday light."]
)
PATH_RE = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):generateContent$")


def text_reply(text: str) -> tuple[int, dict]:
    return 200, {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}]}


def error_reply(code: int, status: str, message: str) -> tuple[int, dict]:
    return code, {"error": {"code": code, "status": status, "message": message}}


class FakeGemini:
    """Scripted replies, one per request, in order; every request's path, headers and JSON body recorded.

    A script step is a reply `(code, payload)` (a str payload is sent as text/html), or `("sleep", seconds, reply)`
    to answer late (a client timeout); an unscripted request gets a 500."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    step = fake.script.pop(0) if fake.script else error_reply(500, "INTERNAL", "unscripted request")
                if step[0] == "sleep":  # a slow server, not an ordering wait: the client's timeout is under test
                    time.sleep(step[1])
                    step = step[2]
                code, payload = step
                if not PATH_RE.match(self.path):
                    code, payload = error_reply(404, "NOT_FOUND", f"no route {self.path}")
                raw = isinstance(payload, str)
                data = payload.encode() if raw else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/html" if raw else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client that timed out closed the socket
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeGemini:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
