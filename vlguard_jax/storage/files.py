"""Atomic writes: a file or a directory appears complete or not at all, so an interrupted run
never leaves a half-written output that a later run would trust."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from vlguard_jax import storage
from vlguard_jax.errors import InputError, MissingFileError, OutputExistsError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def readable(path, directory: bool = False) -> None:
    """Give a file or directory made by `tempfile` (mode 0600 or 0700) the mode a plain `open` or
    `mkdir` would, under the process's umask: outputs stay readable to the colleagues it allows."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_json(path, data, **dump_kw) -> None:
    """A JSON file written to a temporary file beside `path` and renamed over it: readers see the
    old file or the new one, never half of one. In object storage one object write is that."""
    storage.writable(path)
    if storage.is_remote(path):
        out = storage.as_path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, **dump_kw))
        return
    atomic_write_text(path, json.dumps(data, **dump_kw))


def atomic_write_text(path, text: str) -> None:
    """A local UTF-8 text file written to a temporary file beside `path` and renamed over it, with
    the mode a plain write would give it."""
    path = storage.local(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_dir(dst, overwrite: bool = False) -> _AtomicDir | _RemoteDir:
    """Context manager: yields a temporary directory beside `dst`, renamed to `dst` only when the
    block finishes without error. A failure leaves nothing at `dst`. With `overwrite`, an existing
    `dst` is replaced only then, and its old contents deleted. A remote `dst` is written from a
    local temporary directory, its completion marker last (see `storage`)."""
    storage.writable(dst)
    if storage.is_remote(dst):
        return _RemoteDir(dst, overwrite)
    return _AtomicDir(storage.local(dst), overwrite)


class _RemoteDir:
    def __init__(self, dst, overwrite: bool):
        self.dst, self.overwrite = str(dst), overwrite

    def __enter__(self) -> Path:
        # A directory without its marker is a half-written leftover, not an output: replaced.
        if storage.is_complete(self.dst) and not self.overwrite:
            raise OutputExistsError(f"{self.dst} already exists; choose a new destination (or pass --overwrite)")
        self.tmp = storage.temp_dir(".vlguard-upload-")
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                storage.upload_dir(self.tmp, self.dst)
        finally:
            _remove(self.tmp, settle_s=0.0 if exc_type is None else 0.25)
        return False


class _AtomicDir:
    def __init__(self, dst: Path, overwrite: bool):
        self.dst, self.overwrite = dst, overwrite

    def __enter__(self) -> Path:
        if self.dst.exists() and not self.overwrite:
            raise OutputExistsError(f"{self.dst} already exists; choose a new destination (or pass --overwrite)")
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dst.name}.tmp-", dir=self.dst.parent))
        readable(self.tmp, directory=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            _remove(self.tmp)
            return False
        old = None
        if self.dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.dst.name}.old-", dir=self.dst.parent))
            os.replace(self.dst, old / "x")
        os.replace(self.tmp, self.dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


def _remove(path: Path, settle_s: float = 0.25, tries: int = 20) -> None:
    """Remove a failed write's temporary directory. Writer threads of a failed save (orbax,
    tensorstore) may still be finishing their part and recreate files in it: remove until it stays
    gone."""
    for _ in range(tries):
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(settle_s)
        if not path.exists():
            return


_DIGESTS: dict = {}


def sha256_file(path) -> str:
    """A file's sha256, computed once per process while its size and modification time stay."""
    if storage.is_remote(path):
        with storage.as_path(path).open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _DIGESTS[key]


def fingerprint(path, sample: int = 1 << 20) -> str:
    """A content fingerprint of a file or directory, cheap on large checkpoints: every file's
    relative name and size, all of its bytes up to 3 * `sample`, else its first, middle and last
    `sample` bytes. Another checkpoint, a retrained one or a truncated copy gets another value."""
    remote = storage.is_remote(path)
    path = storage.as_path(path)
    files = (
        [(rel, p) for rel, p in storage.walk_files(path) if rel != storage.COMPLETE]
        if path.is_dir()
        else [(path.name, path)]
    )
    h = hashlib.sha256()
    for rel, p in files:
        size = cast(Any, p.stat()).length if remote else p.stat().st_size  # epath's stat has `length`
        h.update(f"{rel}\0{size}\0".encode())
        with p.open("rb") as f:
            if size <= 3 * sample:
                h.update(f.read())
                continue
            for offset in (0, size // 2, size - sample):
                f.seek(offset)
                h.update(f.read(sample))
    return h.hexdigest()[:16]


def check_output(dst, *inputs, overwrite: bool = False) -> Path:
    """`dst` may be written: it is none of the inputs (nor inside one, nor holding one), and it
    does not exist unless `overwrite`."""
    storage.writable(dst)
    out = _canonical(dst)
    for src in inputs:
        where = _canonical(src)
        if out == where or out.startswith(where + "/") or where.startswith(out + "/"):
            raise InputError(f"{dst}: the output would overwrite or sit inside the input {src}; write elsewhere")
    exists = storage.is_complete(dst) if storage.is_remote(dst) else storage.local(dst).exists()
    if exists and not overwrite:
        raise OutputExistsError(f"{dst} already exists; choose a new destination (or pass --overwrite)")
    return storage.as_path(dst)


def _canonical(path) -> str:
    return str(path).rstrip("/") if storage.is_remote(path) else str(Path(path).resolve())


def read_jsonl(path, complete: bool = False) -> list:
    """A JSON-lines input file (blank lines skipped); a bad line is an error naming it. `complete`:
    only the lines ended by a newline (another process may be appending the last)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such file") from None
    if complete:
        text = text[: text.rfind("\n") + 1]
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {n}: invalid JSON ({e.msg})") from None
    return rows


def resume_jsonl(path) -> list[dict]:
    """The complete lines of a JSON-lines file a run appends to (as `append_jsonl` writes it); a
    last line torn by an interruption is cut off the file, so appending resumes after it."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    return read_jsonl(path)


def append_jsonl(path, rows) -> None:
    """Append rows as JSON lines, on disk before returning."""
    with open(storage.local(path), "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def download_dir(src, dst: Path) -> Path:
    """Copy a complete remote directory to local `dst`, unless `dst` is there already. Processes
    that share a host may copy the same directory at once: each copies to its own temporary
    directory, the first to finish renames it into place and the others drop theirs, so `dst` is
    never missing or half-written once it has appeared (callers name it by its content)."""
    root = storage.as_path(src)
    if not (root / storage.COMPLETE).exists():
        raise MissingFileError(
            f"{src}: not a complete directory (no {storage.COMPLETE} marker: absent, or half-written)"
        )
    dst = Path(dst)
    if dst.is_dir():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        for rel, f in storage.walk_files(root):
            if rel != storage.COMPLETE:
                storage.copy_file(f, tmp / rel)
        try:
            os.rename(tmp, dst)
        except OSError:
            if not dst.is_dir():  # not another process's copy: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def write_json(path: Path, data) -> None:
    """A JSON file (responses, summaries) written atomically, readable UTF-8."""
    atomic_write_json(path, data, indent=1, ensure_ascii=False)


def read_json(path: Path, default) -> Any:
    path = storage.as_path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}") from None
