"""A chat-completions endpoint on 127.0.0.1 for the judge tests: real HTTP requests and responses,
answered by a test's function. Nothing leaves the machine."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading


@contextlib.contextmanager
def serve(answer, monkeypatch, model: str = "gpt-4-vision-preview"):
    """`answer(body: dict) -> (status, json object, headers)`; yields the list of requests seen
    ({"path", "auth", "body"}), with VLGUARD_JUDGE_* pointing at the server."""
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            status, obj, headers = answer(body)
            data = json.dumps(obj).encode()
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("VLGUARD_JUDGE_URL", f"http://127.0.0.1:{server.server_port}/v1/")
    monkeypatch.setenv("VLGUARD_JUDGE_MODEL", model)
    monkeypatch.setenv("VLGUARD_JUDGE_API_KEY", "test-key")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    try:
        yield requests
    finally:
        server.shutdown()
        server.server_close()


def reply(content: str, served_by: str | None = None):
    """A chat completion holding `content`; `served_by`: the versioned model name it reports."""
    return (
        200,
        {"choices": [{"message": {"role": "assistant", "content": content}}]}
        | ({"model": served_by} if served_by else {}),
        {},
    )
