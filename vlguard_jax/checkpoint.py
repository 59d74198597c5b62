"""Parameter checkpoints on disk (orbax), written atomically and restored straight into a
sharded layout."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import orbax.checkpoint.experimental.v1 as ocp

PARAMS_DIR = "params"


def load_params(path, abstract=None):
    """Restore a parameter tree. `abstract` (ShapeDtypeStructs, with shardings) sets the layout
    and dtypes; without it the tree comes back as saved, on the host."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no parameter checkpoint here")
    return ocp.load(path, abstract)


def param_metadata(path):
    """The saved tree's shapes and dtypes, without reading any tensor."""
    return ocp.metadata(os.fspath(path)).metadata


class StreamingWriter:
    """Adds tensors to one orbax checkpoint a few at a time, so only the tensors being written are
    ever in memory. Nothing is visible at `path` until `finalize`."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._pending: dict = {}

    def add(self, key_path: tuple[str, ...], array) -> None:
        node = self._pending
        for k in key_path[:-1]:
            node = node.setdefault(k, {})
        node[key_path[-1]] = array

    def flush(self) -> None:
        if self._pending:
            ocp.partial.save(self.path, self._pending)
            self._pending = {}

    def finalize(self) -> None:
        self.flush()
        ocp.partial.finalize(self.path)


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
