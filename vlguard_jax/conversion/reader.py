"""Reads a PyTorch checkpoint directory, or one weight file, one tensor at a time.

safetensors (one file, or sharded with `model.safetensors.index.json`) is read through
`safetensors.safe_open`, opened per tensor so that no file stays mapped; bfloat16 tensors, which
numpy cannot name, are read from their byte range in the file. `.bin` shards are read only with
`torch.load(weights_only=True, mmap=True)`: arbitrary pickles are never executed.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import KeysView
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open

from vlguard_jax.errors import CheckpointError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")  # .bin and .pth: torch pickles
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
NESTED = ("model", "state_dict")


def torch_module(f: Path) -> Any:
    """torch, which only `.bin` and `.pth` (pickled) checkpoints need: an optional dependency,
    imported here. `f` names the file in the message when it is missing."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{f}: reading .bin and .pth checkpoints needs torch; convert it to safetensors or install torch"
        ) from None
    return torch


class TensorSource:
    """name -> (file, shape) for every tensor in a directory or one weight file, read lazily."""

    def __init__(self, path):
        path = Path(path)
        self.path = path  # as given: the directory, or the one weight file
        self._bin_cache: tuple[Path, dict] | None = None
        if path.is_file():
            if path.suffix not in WEIGHT_SUFFIXES:
                raise CheckpointError(f"{path}: not a weight file (*.safetensors, *.bin or *.pth)")
            self.dir, self.files = path.parent, [path]
        elif path.is_dir():
            self.dir = path
            self.files = self._weight_files()
        else:
            raise CheckpointError(f"{path}: no such directory or file")
        self.index: dict[str, Path] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, str] = {}  # as the file names it: safetensors' F32, BF16, I8 ...; torch's float32 ...
        for f in self.files:
            for name, shape, dtype in self._list(f):
                if name in self.index:
                    raise CheckpointError(f"{f}: tensor {name!r} also appears in {self.index[name]}")
                self.index[name] = f
                self.shapes[name] = shape
                self.dtypes[name] = dtype

    def _weight_files(self) -> list[Path]:
        for idx in INDEX_FILES:
            p = self.dir / idx
            if p.exists():
                try:
                    weight_map = json.loads(p.read_text())["weight_map"]
                except (json.JSONDecodeError, KeyError) as e:
                    raise CheckpointError(f"{p}: not a valid index file ({e})") from None
                files = sorted({self.dir / f for f in weight_map.values()})
                missing = [f for f in files if not f.exists()]
                if missing:
                    raise CheckpointError(f"{p}: lists shard {missing[0].name}, which does not exist")
                return files
        files = sorted(self.dir.glob("*.safetensors")) or sorted(self.dir.glob("*.bin"))
        files = [f for f in files if f.name != "training_args.bin"]
        if not files:
            raise CheckpointError(f"{self.dir}: no *.safetensors or *.bin weight files")
        return files

    def _list(self, f: Path):
        if f.suffix == ".safetensors":
            try:
                with safe_open(os.fspath(f), "numpy") as h:
                    return [(k, tuple(h.get_slice(k).get_shape()), h.get_slice(k).get_dtype()) for k in h.keys()]
            except (SafetensorError, OSError) as e:
                raise CheckpointError(f"{f}: cannot read safetensors header ({e})") from None
        return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in self._load_bin(f).items()]

    def _load_bin(self, f: Path) -> dict:
        if self._bin_cache is not None and self._bin_cache[0] == f:
            return self._bin_cache[1]
        torch = torch_module(f)
        try:
            sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # torch raises many types for corrupt or unsafe pickles
            raise CheckpointError(f"{f}: cannot load with torch.load(weights_only=True): {e}") from None
        if not isinstance(sd, dict):
            raise CheckpointError(f"{f}: expected a state dict, found {type(sd).__name__}")
        for wrapper in NESTED:  # a state dict saved inside {"model": ...}, as some releases ship
            if isinstance(sd.get(wrapper), dict) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
                sd = sd[wrapper]
                break
        bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointError(
                f"{f}: entry {bad[0]!r} is a {type(sd[bad[0]]).__name__}, not a tensor "
                f"(a state dict holds tensors, or one of {NESTED} holding them)"
            )
        self._bin_cache = (f, sd)
        return sd

    def keys(self) -> KeysView[str]:
        return self.index.keys()

    def get(self, name: str) -> np.ndarray:
        f = self.index[name]
        try:
            if f.suffix == ".safetensors":
                with safe_open(os.fspath(f), "numpy") as h:
                    if h.get_slice(name).get_dtype() == "BF16":
                        return _read_bf16(f, name)
                    return h.get_tensor(name)
            t = self._load_bin(f)[name]
            torch = torch_module(f)
            if t.dtype == torch.bfloat16:
                return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
            return t.numpy().copy()
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(f"{f}: cannot read tensor {name!r} ({e})") from None


def _read_bf16(f: Path, name: str) -> np.ndarray:
    """A bfloat16 tensor of a safetensors file, from the byte range its header gives."""
    with open(f, "rb") as h:
        (n,) = struct.unpack("<Q", h.read(8))
        entry = json.loads(h.read(n))[name]
        start, end = entry["data_offsets"]
        h.seek(8 + n + start)
        data = h.read(end - start)
    return np.frombuffer(data, np.uint16).view(ml_dtypes.bfloat16).reshape(entry["shape"]).copy()
