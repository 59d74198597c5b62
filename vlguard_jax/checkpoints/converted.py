"""Parameter checkpoints on disk (orbax), written atomically and restored straight into a
sharded layout."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint.experimental.v1 as ocp
from flax import traverse_util

from vlguard_jax import storage
from vlguard_jax.errors import MissingFileError
from vlguard_jax.storage import orbax_s3
from vlguard_jax.storage.files import atomic_dir

PARAMS_DIR = "params"
MODEL_CONFIG = "model_config.json"
HUB_SOURCE = "hub_source.json"  # {"id", "revision"}: the Hub repo a checkpoint was converted from
# Files that travel with a checkpoint: tokenizer, processor and generation settings.
SIDE_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",  # a byte-level BPE's (GPT-2, Qwen2)
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "generation_config.json",
)


def copy_side_files(src, dst) -> None:
    """Copy the tokenizer, processor and generation files that SRC (local or remote) has and the
    local DST lacks."""
    src, dst = storage.as_path(src), Path(dst)
    for name in SIDE_FILES:
        if (src / name).exists() and not (dst / name).exists():
            with (src / name).open("rb") as r, open(dst / name, "wb") as w:
                shutil.copyfileobj(r, w)


def save_checkpoint(dst, config, params, side_files_from=None, tokenizer=None) -> Path:
    """A complete checkpoint directory (what `load_model` reads), written atomically: the
    config, the parameters (gathered to the host), and the tokenizer/processor files."""
    with atomic_dir(dst) as tmp:
        config.save(tmp / MODEL_CONFIG)
        writer = StreamingWriter(tmp / PARAMS_DIR)
        for path, leaf in traverse_util.flatten_dict(jax.device_get(params)).items():
            writer.add(path, np.asarray(leaf))
        writer.finalize()
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if side_files_from is not None:
            copy_side_files(side_files_from, tmp)
    return Path(dst)


def load_params(path, abstract=None) -> Any:
    """Restore a parameter tree. `abstract` (ShapeDtypeStructs, with shardings) sets the layout
    and dtypes, and a leaf given as `SKIP` is not read (it comes back as `SKIP`); without it the
    tree comes back as saved, on the host."""
    path = orbax_s3.orbax_path(path)
    if not storage.as_path(path).is_dir():
        raise MissingFileError(f"{path}: no parameter checkpoint here")
    return ocp.load(path, abstract)


SKIP = ocp.PLACEHOLDER


def param_metadata(path) -> Any:
    """The saved tree's shapes and dtypes, without reading any tensor."""
    return ocp.metadata(orbax_s3.orbax_path(path)).metadata


class StreamingWriter:
    """Adds tensors to one orbax checkpoint a few at a time, so only the tensors being written are
    ever in memory. Nothing is visible at `path` until `finalize`."""

    def __init__(self, path):
        self.path = os.path.abspath(path)  # orbax takes absolute paths only
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


def hub_source(path) -> dict | None:
    """The Hub repo and commit checkpoint `path` was converted from, if it was converted from one."""
    f = storage.as_path(path) / HUB_SOURCE
    return json.loads(f.read_text()) if f.exists() else None
