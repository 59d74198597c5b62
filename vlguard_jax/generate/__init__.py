"""Batched generation: `Generator`, `Sampling`, and prompt building; CLI in `__main__`."""

import jax.numpy as jnp

from vlguard_jax.checkpoints.loading import Loaded, load_model
from vlguard_jax.checkpoints.ref import CheckpointRef
from vlguard_jax.errors import MissingFileError
from vlguard_jax.generate.prompts import prompt_ids, prompt_text, response_text
from vlguard_jax.generate.sampler import Generator, Sampling
from vlguard_jax.models.stacking import DEFAULT_SCAN, ScanLayers
from vlguard_jax.runtime import auto_dtype

__all__ = [
    "Generator",
    "Sampling",
    "auto_dtype",
    "prompt_ids",
    "prompt_text",
    "response_text",
    "load_generator",
]


def load_generator(
    checkpoint: CheckpointRef | str,
    *,
    dtype=None,
    mesh=None,
    batch_size: int = 8,
    bucket: int = 64,
    scan_layers: ScanLayers | str = DEFAULT_SCAN,
) -> tuple[Generator, Loaded]:
    """(Generator, Loaded) for a converted checkpoint or a training workdir. `dtype` defaults to
    `auto_dtype()`; `scan_layers` runs the decoder layers scanned ("auto":
    for deep LLaVA models, where it cuts compile time; see models.stacking)."""
    if dtype is None or dtype == "auto":
        dtype = jnp.dtype(auto_dtype())
    loaded = load_model(checkpoint, mesh=mesh, dtype=dtype, param_dtype=dtype, scan_layers=scan_layers)
    if loaded.tokenizer is None:
        raise MissingFileError(f"{checkpoint}: no tokenizer files next to the weights")
    t = loaded.config.text
    pad = t.pad_token_id if t.pad_token_id is not None else 0
    gen = Generator(
        loaded.model, loaded.params, eos_ids=t.eos_token_id, pad_id=pad, mesh=mesh, batch_size=batch_size, bucket=bucket
    )
    return gen, loaded
