"""`CheckpointRef`: what a checkpoint path is, decided once where a command starts.

A path given on a command line may be a converted checkpoint (`model_config.json` and `params/`)
or a training workdir (`checkpoints/<step>/`), local or in a bucket. `resolve_checkpoint` probes it once,
checks it is complete and readable, and reads its config; every layer below takes the ref, so no
layer probes the path again. The tokenizer is read on first use, at most once.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Literal

from transformers import AutoTokenizer

from vlguard_jax import storage
from vlguard_jax.checkpoints import runs
from vlguard_jax.checkpoints.converted import MODEL_CONFIG, copy_side_files
from vlguard_jax.data.tokenization import authors_tokenizer
from vlguard_jax.errors import MissingFileError
from vlguard_jax.families import Family, ModelConfig, family_of, load_config
from vlguard_jax.storage import files


@dataclasses.dataclass(frozen=True)
class CheckpointRef:
    """A resolved checkpoint path.

    name: the path as the user gave it (for messages and run records).
    path: the same path as a Path (an epath one in a bucket).
    kind: "converted" (a converted checkpoint directory) or "run" (a training workdir, read as
      its latest finished step over its base).
    base: the converted checkpoint whose config and tokenizer the weights use: `path` itself,
      or the run's base.
    config: the model's config, read once from `base`.
    """

    name: str
    path: Path
    kind: Literal["converted", "run"]
    base: Path
    config: ModelConfig

    @property
    def family(self) -> Family:
        return family_of(self.config)

    @property
    def remote(self) -> bool:
        return storage.is_remote(self.name)

    @functools.cached_property
    def tokenizer(self) -> Any:
        """The tokenizer saved beside `base` (None when there is none), set up to give the ids its
        family's authors had (`data.tokenization`); read on first use."""
        return authors_tokenizer(load_tokenizer(self.base), self.family.tokenization)

    @functools.cached_property
    def step(self) -> int:
        """A run's latest finished step, listed once: the weights loaded and the fingerprint are
        that step's even if the run writes another meanwhile."""
        if self.kind != "run":
            raise ValueError(f"{self.name}: a converted checkpoint has no steps")
        step = max(runs.finished_steps(self.path), default=None)
        if step is None:
            raise runs.RunError(f"{self.name}: no finished training checkpoint under {self.path / runs.CHECKPOINTS}")
        return step

    @functools.cached_property
    def fingerprint(self) -> str:
        """The weights' content fingerprint (files.fingerprint); for a run, its step's together
        with its base's. Computed once."""
        if self.kind == "converted":
            return files.fingerprint(self.path)
        step = self.step
        return f"{files.fingerprint(self.base)}+{step}:{files.fingerprint(self.path / runs.CHECKPOINTS / str(step))}"

    def __str__(self) -> str:
        return self.name


def resolve_checkpoint(path: str | os.PathLike | CheckpointRef) -> CheckpointRef:
    """The ref for `path` (a ref passes through): the one place a checkpoint path is probed."""
    if isinstance(path, CheckpointRef):
        return path
    name = os.fspath(path)
    location = storage.as_path(name)
    if runs.is_run(location):
        base = runs.run_base(location)
        return CheckpointRef(name, location, "run", base, load_config(base / MODEL_CONFIG))
    if storage.is_remote(name) and not storage.is_complete(location):
        raise MissingFileError(
            f"{name}: not a complete checkpoint: no {storage.COMPLETE} marker (absent, still being written, or its "
            f"writer was killed). A copy made with other tools needs an empty {storage.COMPLETE} file, written last"
        )
    if not (location / MODEL_CONFIG).exists():
        raise MissingFileError(
            f"{name}: no {MODEL_CONFIG}; not a vlguard-jax checkpoint (python -m conversion.hf_to_flax "
            "writes one) or training workdir"
        )
    return CheckpointRef(name, location, "converted", location, load_config(location / MODEL_CONFIG))


def load_tokenizer(path) -> Any:
    """The tokenizer saved beside a converted checkpoint (copied to a local cache first when
    remote), or None."""
    path = storage.as_path(path)
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model")):
        return None
    if storage.is_remote(path):
        local = storage.temp_dir("vlguard-tokenizer-")
        copy_side_files(path, local)
        path = local
    return AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
