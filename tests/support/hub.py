"""A local HTTP server speaking the part of the Hugging Face Hub's API that huggingface_hub's downloads use (set
HF_ENDPOINT to its URL): `GET /api/models/{repo}/revision/{rev}` (file list with sizes and hashes) and
`HEAD|GET /{repo}/resolve/{rev}/{path}` (commit, ETag and size headers; byte ranges, for resumed downloads).

`cut_first_get`: the first GET of those paths sends half the file and drops the connection (a network fault);
`lie_sha256`: the listing gives these paths a wrong sha256 (a corrupted mirror)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class Hub:
    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.commits = {r: hashlib.sha1(r.encode()).hexdigest() for r in repos}
        self.cut_first_get: set[str] = set()
        self.lie_sha256: set[str] = set()
        self.ranges: list[tuple[str, str]] = []  # (path, Range header) of GETs that asked for a range
        self.gets: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                hub._serve(self, body=True)

            def do_HEAD(self):
                hub._serve(self, body=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def lfs(path: str) -> bool:
        return not path.endswith((".json", ".txt", ".md"))

    def _send_json(self, h, obj, code=200):
        data = json.dumps(obj).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _serve(self, h, body: bool):
        path = unquote(urlparse(h.path).path)
        if path.startswith("/api/models/"):
            repo, _, rev = path[len("/api/models/") :].partition("/revision/")
            if repo not in self.repos:
                return self._send_json(h, {"error": "Repository not found"}, 404)
            siblings = []
            for name, data in self.repos[repo].items():
                s = {"rfilename": name, "size": len(data), "blobId": git_blob(data)}
                if self.lfs(name):
                    sha = hashlib.sha256(data).hexdigest()
                    s["lfs"] = {
                        "sha256": "0" * 64 if name in self.lie_sha256 else sha,
                        "size": len(data),
                        "pointerSize": 134,
                    }
                siblings.append(s)
            return self._send_json(h, {"id": repo, "modelId": repo, "sha": self.commits[repo], "siblings": siblings})
        repo, sep, rest = path.lstrip("/").partition("/resolve/")
        rev, _, name = rest.partition("/")
        if not sep or repo not in self.repos or name not in self.repos[repo]:
            h.send_response(404)
            h.send_header("X-Error-Code", "EntryNotFound")
            h.send_header("Content-Length", "0")
            return h.end_headers()
        data = self.repos[repo][name]
        etag = hashlib.sha256(data).hexdigest() if self.lfs(name) else git_blob(data)
        start = 0
        rng = h.headers.get("Range")
        if body and rng:
            self.ranges.append((name, rng))
            start = int(rng.split("=")[1].split("-")[0])
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", self.commits[repo])
        h.send_header("ETag", f'"{etag}"')
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(data) - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if not body:
            return
        self.gets.append(name)
        if name in self.cut_first_get:
            self.cut_first_get.discard(name)
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        h.wfile.write(data[start:])


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
