"""`load_model`: a converted checkpoint directory -> model, parameters, config, tokenizer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import traverse_util
from transformers import AutoTokenizer

from vlguard_jax.errors import InputError, MissingFileError
from vlguard_jax.io import files, runs, storage
from vlguard_jax.io.converted import MODEL_CONFIG, PARAMS_DIR, copy_side_files, load_params, param_metadata
from vlguard_jax.models import LlavaModel, abstract_params, build_model, load_config
from vlguard_jax.models.config import LlavaConfig, TextOnlyConfig
from vlguard_jax.models.stacking import wants_scan


class Loaded(NamedTuple):
    model: Any  # LlavaModel, or TextOnlyModel for a text-only Llama (a judge)
    params: Any
    config: LlavaConfig | TextOnlyConfig
    tokenizer: Any


def load_model(
    path,
    mesh=None,
    dtype=jnp.bfloat16,
    param_dtype=None,
    attn_impl=None,
    remat_policy: str = "none",
    with_tokenizer: bool = True,
    scan_layers: bool | str = False,
) -> Loaded:
    """Load a checkpoint written by `conversion.hf_to_flax`.

    `dtype` is the compute dtype; `param_dtype` defaults to the dtype the checkpoint was saved in.
    With a `mesh`, every parameter is restored directly into its sharded layout: no host ever
    holds the whole model. `scan_layers` (True/"on", False/"off", or "auto": on for deep LLaVA
    models, see models.stacking) gives a model with scanned decoder layers, its per-layer weights
    stacked once after they are read (the format on disk stays per layer).
    """
    loaded = _load(readable(path), mesh, dtype, param_dtype, attn_impl, remat_policy, with_tokenizer)
    return _scanned(loaded, mesh) if wants_scan(scan_layers, loaded.config) else loaded


def readable(path):
    """The checkpoint's path, once it is known to be complete (a remote one, by its marker)."""
    if storage.is_remote(path) and not runs.is_run(path) and not storage.is_complete(path):
        raise MissingFileError(
            f"{path}: not a complete checkpoint: no {storage.COMPLETE} marker (absent, still being written, or its "
            f"writer was killed). A copy made with other tools needs an empty {storage.COMPLETE} file, written last"
        )
    return storage.as_path(path)


def _scanned(loaded: Loaded, mesh) -> Loaded:
    """The loaded model with scanned layers. The weights are stacked one tensor name at a time and
    the per-layer arrays freed as they go, so the extra memory is one stacked tensor, not a
    second copy of the decoder."""
    if not isinstance(loaded.model, LlavaModel):
        raise InputError("scan_layers applies to LLaVA models; this checkpoint is a text-only Llama")
    model = loaded.model.clone(scan_layers=True)
    lm = dict(loaded.params["language_model"])
    n = loaded.config.text.num_hidden_layers
    per_layer: list[dict[tuple, Any]] = [traverse_util.flatten_dict(lm.pop(f"layers_{i}")) for i in range(n)]
    target: dict[tuple, Any] = traverse_util.flatten_dict(abstract_params(model, mesh)["language_model"]["layers"])
    stacked = {}
    for key in list(per_layer[0]):
        parts = [layer.pop(key) for layer in per_layer]
        out = None if mesh is None else target[key].sharding
        stacked[key] = jax.jit(lambda *xs: jnp.stack(xs), out_shardings=out)(*parts)
        for x in parts:
            x.delete()
    lm["layers"] = traverse_util.unflatten_dict(stacked)
    return Loaded(model, dict(loaded.params, language_model=lm), loaded.config, loaded.tokenizer)


def _load(path: Path, mesh, dtype, param_dtype, attn_impl, remat_policy, with_tokenizer) -> Loaded:
    if runs.is_run(path):
        return _load_run(path, mesh, dtype, param_dtype, attn_impl, remat_policy, with_tokenizer)
    if not (path / MODEL_CONFIG).exists():
        raise MissingFileError(
            f"{path}: no {MODEL_CONFIG}; is this a vlguard-jax checkpoint (made by python -m conversion.hf_to_flax)?"
        )
    config = load_config(path / MODEL_CONFIG)
    if param_dtype is None:
        saved = jax.tree.leaves(param_metadata(path / PARAMS_DIR))
        param_dtype = saved[0].dtype
    model = build_model(config, dtype=dtype, param_dtype=param_dtype, attn_impl=attn_impl, remat_policy=remat_policy)
    abstract = abstract_params(model, mesh)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract)
    params = load_params(path / PARAMS_DIR, abstract)
    return Loaded(model, params, config, load_tokenizer(path) if with_tokenizer else None)


def peek(path) -> tuple[LlavaConfig | TextOnlyConfig, Any]:
    """(config, tokenizer or None) of a checkpoint or training workdir, without reading weights."""
    path = storage.as_path(path)
    if runs.is_run(path):
        base = runs.run_base(path)
        return load_config(base / MODEL_CONFIG), load_tokenizer(base)
    if not (path / MODEL_CONFIG).exists():
        raise MissingFileError(
            f"{path}: no {MODEL_CONFIG}; is this a vlguard-jax checkpoint "
            "(made by python -m conversion.hf_to_flax) or a training workdir?"
        )
    return load_config(path / MODEL_CONFIG), load_tokenizer(path)


def fingerprint(path) -> str:
    """A checkpoint's content fingerprint (files.fingerprint); for a training workdir, that of its
    latest checkpoint step together with its base's."""
    path = storage.as_path(path)
    if runs.is_run(path):
        root = path / runs.CHECKPOINTS
        step = max(runs.finished_steps(path), default=None)
        if step is None:
            raise runs.RunError(f"{path}: no finished training checkpoint under {root}")
        return f"{files.fingerprint(runs.run_base(path))}+{step}:{files.fingerprint(root / str(step))}"
    return files.fingerprint(path)


def load_tokenizer(path):
    """The tokenizer saved beside a checkpoint (copied to a local cache first when remote)."""
    path = storage.as_path(path)
    tokenizer = None
    if any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model")):
        if storage.is_remote(path):
            local = storage.temp_dir("vlguard-tokenizer-")
            copy_side_files(path, local)
            path = local
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
    return tokenizer


def _load_run(path, mesh, dtype, param_dtype, attn_impl, remat_policy, with_tokenizer) -> Loaded:
    """A training workdir: its latest checkpoint over its base, LoRA merged into the kernels."""
    base, config, flat, _ = runs.load_merged(path)
    param_dtype = param_dtype or flat[("language_model", "embed_tokens")].dtype
    model = LlavaModel(config, dtype=dtype, param_dtype=param_dtype, attn_impl=attn_impl, remat_policy=remat_policy)
    abstract = abstract_params(model, mesh)
    host = traverse_util.unflatten_dict({k: v.astype(param_dtype) for k, v in flat.items()})
    if mesh is None:
        params = jax.device_put(host, jax.local_devices()[0])
    else:
        params = jax.tree.map(lambda a, s: jax.device_put(a, s.sharding), host, abstract)
    return Loaded(model, params, config, load_tokenizer(base) if with_tokenizer else None)
