"""`load_model`: a checkpoint (converted, or a training workdir) -> model, parameters, config,
tokenizer."""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import traverse_util

from vlguard_jax.checkpoints import runs
from vlguard_jax.checkpoints.converted import PARAMS_DIR, load_params, param_metadata
from vlguard_jax.checkpoints.ref import CheckpointRef, resolve_checkpoint
from vlguard_jax.errors import InputError
from vlguard_jax.models import abstract_params, build_model
from vlguard_jax.models.config import LlavaConfig, TextOnlyConfig
from vlguard_jax.models.stacking import DEFAULT_SCAN, ScanLayers, wants_scan


class Loaded(NamedTuple):
    model: Any  # LlavaModel, or TextOnlyModel for a text-only Llama (a judge)
    params: Any
    config: LlavaConfig | TextOnlyConfig
    tokenizer: Any


def load_model(
    checkpoint: CheckpointRef | str | os.PathLike,
    mesh=None,
    dtype=jnp.bfloat16,
    param_dtype=None,
    attn_impl=None,
    remat_policy: str = "none",
    with_tokenizer: bool = True,
    scan_layers: ScanLayers | str | bool = DEFAULT_SCAN,
) -> Loaded:
    """Load a converted checkpoint (written by `conversion.hf_to_flax`) or a training workdir's
    latest step; a path is resolved here (`checkpoints.ref`), a ref is used as it is.

    `dtype` is the compute dtype; `param_dtype` defaults to the dtype of the checkpoint's largest tensor.
    With a `mesh`, every parameter is restored directly into its sharded layout: no host ever
    holds the whole model. `scan_layers` ("auto": on for deep LLaVA models, see models.stacking;
    "on", "off") gives a model with scanned decoder layers, its per-layer weights stacked once
    after they are read (the format on disk stays per layer).
    """
    ref = resolve_checkpoint(checkpoint)
    load = _load_run if ref.kind == "run" else _load_converted
    model, params = load(ref, mesh, dtype, param_dtype, attn_impl, remat_policy)
    loaded = Loaded(model, params, ref.config, ref.tokenizer if with_tokenizer else None)
    if ScanLayers.of(scan_layers) is ScanLayers.ON and not ref.family.scannable:
        raise InputError(f"{ref.name}: a {ref.family.label} checkpoint; its decoder layers do not run scanned")
    return _scanned(loaded, mesh) if wants_scan(scan_layers, loaded.config) else loaded


def _scanned(loaded: Loaded, mesh) -> Loaded:
    """The loaded model with scanned layers. The weights are stacked one tensor name at a time and
    the per-layer arrays freed as they go, so the extra memory is one stacked tensor, not a
    second copy of the decoder."""
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


def _load_converted(ref: CheckpointRef, mesh, dtype, param_dtype, attn_impl, remat_policy):
    if param_dtype is None:  # the dtype most of the checkpoint is saved in (a conversion keeps each tensor's)
        param_dtype = max(
            jax.tree.leaves(param_metadata(ref.path / PARAMS_DIR)), key=lambda m: math.prod(m.shape)
        ).dtype
    model = build_model(
        ref.config, dtype=dtype, param_dtype=param_dtype, attn_impl=attn_impl, remat_policy=remat_policy
    )
    abstract = abstract_params(model, mesh)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract)
    return model, load_params(ref.path / PARAMS_DIR, abstract)


def _load_run(ref: CheckpointRef, mesh, dtype, param_dtype, attn_impl, remat_policy):
    """A training workdir: its latest checkpoint (the ref's step) over its base, LoRA merged into
    the kernels."""
    _, config, flat, _ = runs.load_merged(ref.path, ref.step)
    param_dtype = param_dtype or flat[("language_model", "embed_tokens")].dtype
    model = build_model(config, dtype=dtype, param_dtype=param_dtype, attn_impl=attn_impl, remat_policy=remat_policy)
    abstract = abstract_params(model, mesh)
    host = traverse_util.unflatten_dict({k: v.astype(param_dtype) for k, v in flat.items()})
    if mesh is None:
        params = jax.device_put(host, jax.local_devices()[0])
    else:
        params = jax.tree.map(lambda a, s: jax.device_put(a, s.sharding), host, abstract)
    return model, params
