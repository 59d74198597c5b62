"""A generator for a checkpoint: its model loaded on the evaluation mesh, with its tokenizer's stop and
pad ids."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from vlguard_jax import sharding
from vlguard_jax.checkpoints.converted import PARAMS_DIR, param_metadata
from vlguard_jax.checkpoints.loading import Loaded, load_model
from vlguard_jax.checkpoints.ref import CheckpointRef, resolve_checkpoint
from vlguard_jax.errors import MissingFileError
from vlguard_jax.generate.sampler import Generator
from vlguard_jax.models.config import DEFAULT_SCAN, ScanLayers
from vlguard_jax.runtime import auto_dtype


def weight_bytes(ref: CheckpointRef, dtype) -> int:
    """The model's weights in `dtype`, from the base's saved shapes (no tensor read)."""
    meta = jax.tree.leaves(param_metadata(ref.base / PARAMS_DIR))
    return sum(math.prod(m.shape) for m in meta) * jnp.dtype(dtype).itemsize


def load_generator(
    checkpoint: CheckpointRef | str,
    *,
    dtype=None,
    mesh: Mesh | str | None = None,
    batch_size: int = 8,
    bucket: int = 64,
    scan_layers: ScanLayers | str = DEFAULT_SCAN,
) -> tuple[Generator, Loaded]:
    """(Generator, Loaded) for a converted checkpoint or a training workdir. `dtype` defaults to
    `auto_dtype()`; `mesh` is a Mesh, a `--mesh` spec ("D,F,T" or "auto", sharding.eval_mesh) or
    None (one device); the batch is rounded up to split evenly over it. `scan_layers` runs the
    decoder layers scanned ("auto": for deep LLaVA models, where it cuts compile time; see
    models.stacking)."""
    if dtype is None or dtype == "auto":
        dtype = jnp.dtype(auto_dtype())
    if isinstance(mesh, str):  # a --mesh spec (sharding.eval_mesh), "auto" among them
        ref = resolve_checkpoint(checkpoint)
        mesh = sharding.eval_mesh(mesh, lambda: weight_bytes(ref, dtype))
        checkpoint = ref
    batch_size = -(-batch_size // sharding.batch_multiple(mesh)) * sharding.batch_multiple(mesh)
    loaded = load_model(checkpoint, mesh=mesh, dtype=dtype, param_dtype=dtype, scan_layers=scan_layers)
    if loaded.tokenizer is None:
        raise MissingFileError(f"{checkpoint}: no tokenizer files next to the weights")
    t = loaded.config.text
    pad = t.pad_token_id if t.pad_token_id is not None else 0
    gen = Generator(
        loaded.model, loaded.params, eos_ids=t.eos_token_id, pad_id=pad, mesh=mesh, batch_size=batch_size, bucket=bucket
    )
    return gen, loaded
