"""`load_model`: a checkpoint (converted, or a training workdir) -> model, parameters, config,
tokenizer."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import traverse_util

from vlguard_jax.checkpoints import runs
from vlguard_jax.checkpoints.converted import PARAMS_DIR, SKIP, load_params, param_metadata
from vlguard_jax.checkpoints.ref import CheckpointRef, resolve_checkpoint
from vlguard_jax.errors import InputError
from vlguard_jax.families import ModelConfig, build_model
from vlguard_jax.models import abstract_params
from vlguard_jax.models.config import DEFAULT_SCAN, ScanLayers
from vlguard_jax.models.layers import LORA_PARAMS


class Loaded(NamedTuple):
    model: Any  # LlavaModel, or TextOnlyModel for a text-only Llama (a judge)
    params: Any
    config: ModelConfig
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
    return _scanned(loaded, mesh, ref.family.decoder) if ref.family.wants_scan(scan_layers, loaded.config) else loaded


def _at(tree, path: tuple[str, ...]) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def _replaced(tree: dict, path: tuple[str, ...], value) -> dict:
    """`tree` with the subtree at `path` replaced (copies along the path only)."""
    head, *rest = path
    return dict(tree, **{head: _replaced(tree[head], tuple(rest), value) if rest else value})


def _scanned(loaded: Loaded, mesh, decoder: tuple[str, ...]) -> Loaded:
    """The loaded model with scanned layers (the family's `decoder` holds `layers_{i}`). The
    weights are stacked one tensor name at a time and the per-layer arrays freed as they go, so
    the extra memory is one stacked tensor, not a second copy of the decoder."""
    model = loaded.model.clone(scan_layers=True)
    lm = dict(_at(loaded.params, decoder))
    n = loaded.config.text.num_hidden_layers
    per_layer: list[dict[tuple, Any]] = [traverse_util.flatten_dict(lm.pop(f"layers_{i}")) for i in range(n)]
    target: dict[tuple, Any] = traverse_util.flatten_dict(_at(abstract_params(model, mesh), decoder)["layers"])
    stacked = {}
    for key in list(per_layer[0]):
        parts = [layer.pop(key) for layer in per_layer]
        out = None if mesh is None else target[key].sharding
        stacked[key] = jax.jit(lambda *xs: jnp.stack(xs), out_shardings=out)(*parts)
        for x in parts:
            x.delete()
    lm["layers"] = traverse_util.unflatten_dict(stacked)
    return Loaded(model, _replaced(loaded.params, decoder, lm), loaded.config, loaded.tokenizer)


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
    """A training workdir: its step's trained parameters (never its optimizer state) over its
    base's others, each restored straight into its place (its shard, with a mesh), the LoRA
    factors merged into their kernels on the devices. The host holds no whole model."""
    step = ref.step
    meta = runs.read_meta(ref.path, step)
    base_meta: dict[tuple, Any] = traverse_util.flatten_dict(param_metadata(ref.base / PARAMS_DIR))
    saved = runs.params_metadata(ref.path, step)
    embed, decoder = ref.family.embed, ref.family.decoder
    param_dtype = param_dtype or (saved[embed] if embed in saved else base_meta[embed]).dtype
    config = ref.config
    if getattr(config, "lora", None) is not None:  # a MiniGPT-v2 base with its factors: merged below
        config = dataclasses.replace(config, lora=None)
    model = build_model(config, dtype=dtype, param_dtype=param_dtype, attn_impl=attn_impl, remat_policy=remat_policy)
    target: dict[tuple, Any] = traverse_util.flatten_dict(abstract_params(model, mesh))
    replicated = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if mesh is not None:
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def place(path) -> Any:  # a per-layer path; LoRA factors (small) are replicated
        return target[path].sharding if mesh is not None and path in target else replicated

    def place_saved(path, _) -> Any:  # a scanned run's stacked [L, ...] leaves: the layer's, over L
        n = len(decoder)
        if mesh is None or path[: n + 1] != (*decoder, "layers"):
            return place(path)
        spec = place((*decoder, "layers_0", *path[n + 1 :])).spec
        return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, *spec))

    flat = _per_layer(runs.read_params(ref.path, step, place_saved), place, decoder)
    stray = [k for k in flat if k[-1] not in LORA_PARAMS and k not in base_meta]
    if stray:
        raise runs.RunError(f"{ref.name}: step {step} holds {'/'.join(stray[0])}, which the base checkpoint lacks")
    others = {k: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=place(k)) for k, m in base_meta.items()}
    abstract = {k: SKIP if k in flat else s for k, s in others.items()}
    base = traverse_util.flatten_dict(load_params(ref.base / PARAMS_DIR, traverse_util.unflatten_dict(abstract)))
    flat.update({k: v for k, v in base.items() if k not in flat})
    if runs.has_lora(flat):
        _merge_lora(flat, runs.lora_of(ref.name, meta).scale)
    if set(flat) != set(target):
        raise ValueError(
            f"{ref.name}: the run's tree does not match its model's: {sorted(set(flat) ^ set(target))[:3]}"
        )
    for k, s in target.items():
        if flat[k].dtype != s.dtype:
            flat[k] = _cast(flat[k], s.dtype, s.sharding)
    return model, traverse_util.unflatten_dict(flat)


def _per_layer(flat: dict, place, decoder: tuple[str, ...]) -> dict:
    """Stacked decoder leaves (a scanned run's, under the family's `decoder`) split into per-layer
    leaves on the devices, each stacked array freed once split."""
    out, n = {}, len(decoder)
    for k, x in flat.items():
        if k[: n + 1] != (*decoder, "layers"):
            out[k] = x
            continue
        for i in range(x.shape[0]):
            key = (*decoder, f"layers_{i}", *k[n + 1 :])
            out[key] = jax.jit(lambda a, i=i: a[i], out_shardings=place(key))(x)
        x.delete()
    return out


def _merge_lora(flat: dict, scale: float) -> None:
    """kernel + scale * A @ B for every LoRA'd kernel, in float32 then back to the kernel's dtype,
    under jit on the kernel's devices; the factors are dropped (runs.merge_lora on the host)."""
    merge = jax.jit(
        lambda w, a, b: (w.astype(jnp.float32) + scale * (a.astype(jnp.float32) @ b.astype(jnp.float32))).astype(
            w.dtype
        ),
        donate_argnums=0,
    )
    for k in [k for k in flat if k[-1] == "lora_a"]:
        parent = k[:-1]
        a, b = flat.pop(k), flat.pop(parent + ("lora_b",))
        flat[parent + ("kernel",)] = merge(flat[parent + ("kernel",)], a, b)


def _cast(x, dtype, sharding) -> Any:
    out = jax.jit(lambda a: a.astype(dtype), out_shardings=sharding)(x)
    x.delete()
    return out
