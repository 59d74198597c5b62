"""A training run's outputs (`workdir`): the latest checkpoint's trainable weights on top of the
base checkpoint the run names, with LoRA factors kept apart or merged into the kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import traverse_util

from vlguard_jax import storage
from vlguard_jax.checkpoint import MODEL_CONFIG, PARAMS_DIR, load_params
from vlguard_jax.models.config import LlavaConfig
from vlguard_jax.models.layers import LORA_PARAMS
from vlguard_jax.models.stacking import to_per_layer
from vlguard_jax.train.checkpoints import CHECKPOINTS, finished_steps, read_latest, read_meta


class RunError(ValueError):
    """A training run that cannot be read; the message names the directory."""


def is_run(path) -> bool:
    path = storage.as_path(path)
    return (path / CHECKPOINTS).is_dir() and not (path / MODEL_CONFIG).exists()


def run_base(workdir):
    """The base checkpoint a run names, from its latest checkpoint's metadata (no tensor read)."""
    steps = finished_steps(workdir)
    if not steps:
        raise RunError(f"{workdir}: no finished training checkpoint under {storage.as_path(workdir) / CHECKPOINTS}")
    base = storage.as_path(read_meta(workdir, steps[-1]).get("base_checkpoint") or ".")
    if not (base / MODEL_CONFIG).exists():
        raise RunError(
            f"{workdir}: its base checkpoint {base} is missing; the run's LoRA and projector weights need it"
        )
    return base


def load_run(workdir, step: int | None = None):
    """(base checkpoint dir, config, flat params {path tuple: np.ndarray} incl. LoRA factors, meta)."""
    step, state, meta = read_latest(workdir, step)
    base = storage.as_path(meta.get("base_checkpoint") or ".")
    if not (base / MODEL_CONFIG).exists():
        raise RunError(
            f"{workdir}: its base checkpoint {base} is missing; the run's LoRA and projector weights need it"
        )
    config = LlavaConfig.load(base / MODEL_CONFIG)
    flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(load_params(base / PARAMS_DIR)).items()}
    # A run with scanned layers saves them stacked; everything downstream reads them per layer.
    trained = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(to_per_layer(state["params"])).items()}
    for k in trained:
        if k[-1] not in LORA_PARAMS and k not in flat:
            raise RunError(f"{workdir}: step {step} holds {'/'.join(k)}, which the base checkpoint lacks")
    flat.update(trained)
    meta["step"] = step
    return base, config, flat, meta


def has_lora(flat: dict) -> bool:
    return any(k[-1] == "lora_a" for k in flat)


def lora_scale(meta) -> float:
    lora = meta.get("lora") or {}
    return float(lora["alpha"]) / int(lora["rank"])


def merge_lora(flat: dict, scale: float) -> dict:
    """kernel + scale * A @ B for every LoRA'd layer, in float32 then back to the kernel's dtype."""
    out = {k: v for k, v in flat.items() if k[-1] not in LORA_PARAMS}
    for k, a in flat.items():
        if k[-1] != "lora_a":
            continue
        parent = k[:-1]
        b = flat[parent + ("lora_b",)]
        kernel = out[parent + ("kernel",)]
        merged = kernel.astype(np.float32) + scale * (a.astype(np.float32) @ b.astype(np.float32))
        out[parent + ("kernel",)] = merged.astype(kernel.dtype)
    return out


def load_merged(workdir, step: int | None = None):
    """`load_run` with any LoRA factors folded into their kernels."""
    base, config, flat, meta = load_run(workdir, step)
    if has_lora(flat):
        flat = merge_lora(flat, lora_scale(meta))
    return base, config, flat, meta


def save_run_checkpoint(workdir, dst, step: int | None = None) -> Path:
    """The run's weights (LoRA merged) as a plain checkpoint directory, with the base's tokenizer
    and processor files: usable as the base of another run, or by any loader."""
    import jax.numpy as jnp

    from vlguard_jax.checkpoint import save_checkpoint

    base, config, flat, _ = load_merged(workdir, step)
    dtype = flat[("language_model", "embed_tokens")].dtype
    params = traverse_util.unflatten_dict(
        {k: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v for k, v in flat.items()}
    )
    return save_checkpoint(dst, config, params, side_files_from=base)
