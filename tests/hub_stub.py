"""A stand-in for the Hugging Face Hub on 127.0.0.1, for huggingface_hub through `HF_ENDPOINT`: the
few endpoints its downloads, `snapshot_download` and its fsspec file system use, answering as the
Hub answers (including its error headers, which huggingface_hub turns into its exceptions).

- `GET /api/{models,datasets}/ORG/NAME[/revision/REV]`: the repo's info and commit;
- `GET /api/.../tree/REV[/PATH]` and `POST /api/.../paths-info/REV`: listings;
- `HEAD`/`GET [/datasets]/ORG/NAME/resolve/REV/PATH`: a file, with `Range` for resumed downloads.

Revisions are "main", the repo's tags and its commit id. A gated repo answers its info but 401
GatedRepo for its files and tree; an unknown repo 401 RepoNotFound, as the Hub does. Every file
download is counted in `downloads` (path -> GETs); `cut_once` interrupts a file's next transfer
halfway, and `ranges` records the resumed ones.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Repo:
    def __init__(self, files: dict[str, bytes], gated: bool = False, tags: tuple[str, ...] = ()):
        self.files, self.gated, self.tags = files, gated, tags

    def sha(self, repo_id: str) -> str:
        return hashlib.sha1(repo_id.encode()).hexdigest()

    def tree(self, path: str, recursive: bool) -> list[dict] | None:
        """Entries under `path` ("" for the root); None if it is no directory."""
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        under = [p for p in self.files if p.startswith(prefix)]
        if prefix and not under:
            return None
        out: dict[str, dict] = {}
        for p in under:
            rest = p[len(prefix) :].split("/")
            depth = len(rest) if recursive else 1
            for i in range(1, min(depth, len(rest)) + 1):
                name = prefix + "/".join(rest[:i])
                out[name] = self.entry(name) if i == len(rest) else {"type": "directory", "oid": "0" * 40, "path": name}
        return [out[k] for k in sorted(out)]

    def entry(self, path: str) -> dict:
        data = self.files[path]
        return {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": path}


class HubStub:
    """The server, on a free port, in a daemon thread; `url` is what HF_ENDPOINT takes."""

    def __init__(self, repos: dict[tuple[str, str], Repo]):
        self.repos = repos  # (type "model"|"dataset", "org/name") -> Repo
        self.downloads: Counter = Counter()
        self.delay = 0.0  # seconds before each file's body: overlapping downloads for lock tests
        self.cut_once: set[str] = set()  # "kind:org/name/path": the next GET sends half, then hangs up
        self.ranges: list[tuple[str, int]] = []  # (file, first byte) of every GET with a Range
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                stub.answer(self, head=True)

            def do_GET(self):
                stub.answer(self, head=False)

            def do_POST(self):
                stub.answer(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- routing ---------------------------------------------------------------------------------

    def answer(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        url = urllib.parse.urlsplit(h.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        query = urllib.parse.parse_qs(url.query)
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in ("models", "datasets"):
            kind, repo_id, rest = parts[1][:-1], "/".join(parts[2:4]), parts[4:]
            return self.api(h, kind, repo_id, rest, query)
        kind = "dataset" if parts[0] == "datasets" else "model"
        parts = parts[1:] if kind == "dataset" else parts
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve(h, kind, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), head)
        return self.error(h, 404, "EntryNotFound", f"no route {url.path}")

    def found(self, h, kind: str, repo_id: str, rev: str | None, gated_ok: bool):
        repo = self.repos.get((kind, repo_id))
        if repo is None:
            return self.error(h, 401, "RepoNotFound", "Repository not found")
        if repo.gated and not gated_ok:
            return self.error(h, 401, "GatedRepo", "Access to this repo is restricted: accept its conditions")
        if rev not in (None, "main", repo.sha(repo_id), *repo.tags):
            return self.error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo

    def api(self, h, kind: str, repo_id: str, rest: list[str], query: dict) -> None:
        if not rest or rest[0] == "revision":
            repo = self.found(h, kind, repo_id, rest[1] if len(rest) > 1 else None, gated_ok=True)
            if repo is None:
                return None
            siblings = [{"rfilename": p} for p in sorted(repo.files)]
            info = {"id": repo_id, "sha": repo.sha(repo_id), "siblings": siblings, "private": False}
            return self.json(h, dict(info, gated="auto" if repo.gated else False))
        repo = self.found(h, kind, repo_id, rest[1] if len(rest) > 1 else None, gated_ok=False)
        if repo is None:
            return None
        if rest[0] == "tree":
            entries = repo.tree("/".join(rest[2:]), query.get("recursive", ["false"])[0].lower() in ("1", "true"))
            if entries is None:
                return self.error(h, 404, "EntryNotFound", "no such directory")
            return self.json(h, entries)
        if rest[0] == "paths-info":
            length = int(h.headers.get("Content-Length") or 0)
            body = h.rfile.read(length).decode()
            form = json.loads(body) if body.startswith("{") else urllib.parse.parse_qs(body)
            wanted = form.get("paths", [])
            wanted = [wanted] if isinstance(wanted, str) else wanted
            out = []
            for p in wanted:
                p = p.strip("/")
                if p in repo.files:
                    out.append(repo.entry(p))
                elif repo.tree(p, False) is not None:
                    out.append({"type": "directory", "oid": "0" * 40, "path": p})
            return self.json(h, out)
        return self.error(h, 404, "EntryNotFound", f"no api route {rest}")

    def resolve(self, h, kind: str, repo_id: str, rev: str, path: str, head: bool) -> None:
        repo = self.found(h, kind, repo_id, rev, gated_ok=False)
        if repo is None:
            return None
        if path not in repo.files:
            return self.error(h, 404, "EntryNotFound", f"{path} not found")
        data = repo.files[path]
        key = f"{kind}:{repo_id}/{path}"
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[len("bytes=") :].split("-")[0] or 0)
            if not head:
                self.ranges.append((key, start))
        body = data[start:]
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", repo.sha(repo_id))
        h.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        h.send_header("Content-Length", str(len(body)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if not head:
            self.downloads[key] += 1
            time.sleep(self.delay)
            if key in self.cut_once:  # an interrupted transfer: the client must resume it
                self.cut_once.discard(key)
                h.wfile.write(body[: len(body) // 2])
                h.wfile.flush()
                time.sleep(0.3)  # the client reads the first half before the connection drops
                h.close_connection = True
                return None
            h.wfile.write(body)
        return None

    def json(self, h, obj) -> None:
        body = json.dumps(obj).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def error(self, h, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


def folder(root: Path) -> dict[str, bytes]:
    """A local folder's files, by posix path, as a repo's contents."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
