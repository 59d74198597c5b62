"""Local object-storage emulators for the storage tests, and the environment that points every
client at them and away from any cloud.

- GCS: `gcp-storage-emulator` (the JSON API, with the read headers tensorstore needs: see
  gcs_emulator.py); S3: `moto` in server mode. Both on 127.0.0.1, on
  free ports, ended by their pid.
- Credentials are fake and discovery is off before any client starts: google-auth and gcsfs never
  probe a metadata server (NO_GCE_CHECK, anonymous token, metadata host set to a closed loopback
  port), tensorstore takes a test token, AWS clients have fake keys and no EC2 metadata.
- `GUARD` (a sitecustomize put on PYTHONPATH) refuses, in the test process and in every Python
  process it starts, any connection outside 127.0.0.0/8 and records it in `$NET_GUARD_LOG`.
- Clients written in C++ (tensorstore's curl) escape that guard, so the proxy variables send every
  HTTP(S) request that leaves loopback to the counted metadata stand-in instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

GUARD = """
import os, socket
_connect = socket.socket.connect
def _guarded(self, address):
    host = address[0] if isinstance(address, tuple) else None
    if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost") \\
            and not str(host).startswith("127."):
        with open(os.environ["NET_GUARD_LOG"], "a") as f:
            f.write(f"{host}\\n")
        raise ConnectionRefusedError(f"test network guard: {host} is outside 127.0.0.0/8")
    return _connect(self, address)
if os.environ.get("NET_GUARD_LOG"):
    socket.socket.connect = _guarded
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int, proc, name: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} within {timeout} s")


class Listener:
    """A loopback port that counts the connections made to it (the metadata server's stand-in)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port, self.connections = self.sock.getsockname()[1], 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


def guard_dir(tmp: Path) -> Path:
    """tmp/guard holding GUARD as a sitecustomize: first on a child's PYTHONPATH, it guards the child."""
    d = tmp / "guard"
    d.mkdir(exist_ok=True)
    (d / "sitecustomize.py").write_text(GUARD)
    return d


def environment(tmp: Path, gcs_port: int, s3_port: int, metadata_port: int) -> dict:
    guard = guard_dir(tmp)
    closed = f"127.0.0.1:{metadata_port}"  # a metadata server's address: any probe is counted
    return {
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{gcs_port}",
        "TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{gcs_port}",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-token",
        "FSSPEC_GS_TOKEN": "anon",
        "FSSPEC_GS_PROJECT": "test",
        "GOOGLE_CLOUD_PROJECT": "test",
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": closed,
        "GCE_METADATA_IP": closed,
        "GCE_METADATA_ROOT": closed,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "AWS_ACCESS_KEY_ID": "fake-key",
        "AWS_SECRET_ACCESS_KEY": "fake-secret",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        **{k: f"http://{closed}" for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")},
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "NET_GUARD_LOG": str(tmp / "guard" / "refused.log"),
        "GUARD_PATH": str(guard),
    }


class Emulators:
    """Both emulators, started on free loopback ports; `env` is what clients need."""

    def __init__(self, tmp: Path):
        self.gcs_port, self.s3_port = free_port(), free_port()
        self.metadata = Listener()
        self.env = environment(tmp, self.gcs_port, self.s3_port, self.metadata.port)
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("gcs_emulator.py")),
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.gcs_port),
                    "--in-memory",
                    "--default-bucket",
                    "bkt",
                ],
                **quiet,
            ),
            subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)], **quiet
            ),
        ]
        try:
            _wait(self.gcs_port, self.procs[0], "gcp-storage-emulator")
            _wait(self.s3_port, self.procs[1], "moto server")
        except BaseException:
            self.close()
            raise

    def make_s3_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)

    def refused(self) -> list[str]:
        """Connections refused for leaving 127.0.0.0/8, and probes of the metadata address."""
        log = Path(self.env["NET_GUARD_LOG"])
        refused = log.read_text().split() if log.exists() else []
        return refused + ["metadata server"] * self.metadata.connections

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.metadata.sock.close()


def subprocess_env(emu: Emulators, base: dict) -> dict:
    """`base` (a test's subprocess environment) with the emulators' variables and the guard."""
    env = dict(base, **{k: v for k, v in emu.env.items() if k != "GUARD_PATH"})
    env["PYTHONPATH"] = os.pathsep.join([emu.env["GUARD_PATH"], env.get("PYTHONPATH", "")])
    return env


@contextlib.contextmanager
def started(tmp: Path):
    """Both emulators with bucket `bkt`, their variables set in this process and the guard
    installed here: the module fixture of every test that uses buckets."""
    import pytest

    e = Emulators(tmp)
    mp = pytest.MonkeyPatch()
    try:
        for k, v in e.env.items():
            mp.setenv(k, v)
        exec(GUARD, {})  # this process too: no connection leaves 127.0.0.0/8
        e.make_s3_bucket("bkt")
        yield e
    finally:
        mp.undo()
        e.close()


class FailingWrites:
    """A store that fails under a write: a loopback proxy in front of an emulator that passes every
    request through, except writes (PUT, POST, PATCH) of objects whose unquoted URL matches
    `pattern`, which it answers 403 (a refusal no client retries). `failed` lists them."""

    def __init__(self, upstream_port: int, pattern: str):
        import http.client
        import http.server
        import re
        import urllib.parse

        self.failed: list[str] = []
        match, failed = re.compile(pattern).search, self.failed

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                body = self._body()
                if self.command in ("PUT", "POST", "PATCH") and match(urllib.parse.unquote(self.path)):
                    failed.append(f"{self.command} {urllib.parse.unquote(self.path)}")
                    self.send_response(403)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                up = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("connection", "expect", "transfer-encoding")
                }
                up.request(self.command, self.path, body=body, headers=headers)
                r = up.getresponse()
                data = r.read()
                self.send_response(r.status, r.reason)
                for k, v in r.getheaders():  # a HEAD's length is the object's: kept
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header(
                    "Content-Length", r.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                )
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                up.close()

            def _body(self) -> bytes:
                if "chunked" not in self.headers.get("Transfer-Encoding", ""):
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                out = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    out += self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return out

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _relay

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
