"""Atomic writes: a file or a directory appears complete or not at all, so an interrupted run
never leaves a half-written output that a later run would trust."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_json(path, data, **dump_kw) -> None:
    """A JSON file written to a temporary file beside `path` and renamed over it: readers see the
    old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, **dump_kw)
    os.replace(tmp, path)


def atomic_dir(dst) -> "_AtomicDir":
    """Context manager: yields a temporary directory beside `dst`, renamed to `dst` only when the
    block finishes without error. A failure leaves nothing at `dst`."""
    return _AtomicDir(Path(dst))


class _AtomicDir:
    def __init__(self, dst: Path):
        self.dst = dst

    def __enter__(self) -> Path:
        if self.dst.exists():
            raise FileExistsError(f"{self.dst} already exists; choose a new destination")
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dst.name}.tmp-", dir=self.dst.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.tmp, self.dst)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False
