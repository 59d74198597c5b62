"""The two forms of the decoder's weights, and when to use which.

On disk and in every converter the decoder is per layer (`layers_0` ... `layers_{L-1}` under
the Llama decoder's part, `llama.DECODER`). A model with `scan_layers` holds one `layers` tree whose leaves have a leading
axis L. These functions move any tree that mirrors the parameters (trainable weights, Adam
moments inside optax's states, shape trees) between the two forms.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp

from vlguard_jax.models.config import ScanLayers
from vlguard_jax.models.llama import DECODER

# Scanning pays at real depths (32 and 40 layers compile many times faster) and costs a little per
# step at shallow ones, so shallower models stay unrolled (the figures: BENCHMARKS.md).
SCAN_MIN_LAYERS = 16


_LAYER = re.compile(r"layers_(\d+)$")


def wants_scan(setting: ScanLayers | str | bool, config, scannable: bool) -> bool:
    """Whether to scan the decoder layers of `config`, whose family's model can (`scannable`)."""
    setting = ScanLayers.of(setting)
    if setting is ScanLayers.AUTO:
        return scannable and config.text.num_hidden_layers >= SCAN_MIN_LAYERS
    return setting is ScanLayers.ON


def _map_decoder(tree, fn):
    """`tree` with `fn` applied to every dict found under the decoder's key; dicts, tuples,
    lists, NamedTuples (optax states) and dataclasses (a train state) are walked."""
    if isinstance(tree, dict):
        return {k: fn(v) if k == DECODER and isinstance(v, dict) else _map_decoder(v, fn) for k, v in tree.items()}
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):  # a TrainState
        return dataclasses.replace(
            tree, **{f.name: _map_decoder(getattr(tree, f.name), fn) for f in dataclasses.fields(tree)}
        )
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_map_decoder(v, fn) for v in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map_decoder(v, fn) for v in tree)
    return tree


def _stack(lm: dict) -> dict:
    idx = sorted(int(m.group(1)) for k in lm if (m := _LAYER.match(k)))
    if not idx:
        return lm
    if idx != list(range(len(idx))):
        raise ValueError(f"decoder layers {idx} are not 0..{len(idx) - 1}")
    rest = {k: v for k, v in lm.items() if not _LAYER.match(k)}
    per_layer = [lm[f"layers_{i}"] for i in idx]
    return {**rest, "layers": jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)}


def _unstack(lm: dict, num_layers: int | None) -> dict:
    if "layers" not in lm:
        return lm
    layers = lm["layers"]
    leaves = jax.tree.leaves(layers)
    n = leaves[0].shape[0] if leaves else num_layers
    if n is None:  # e.g. an optimizer state's masked-out copy: structure only, no arrays
        raise ValueError("stacked layers without arrays: pass num_layers")
    rest = {k: v for k, v in lm.items() if k != "layers"}
    return {**rest, **{f"layers_{i}": jax.tree.map(lambda x, i=i: x[i], layers) for i in range(n)}}


def to_stacked(tree) -> Any:
    """Per-layer form -> stacked form (trees already stacked pass through)."""
    return _map_decoder(tree, _stack)


def to_per_layer(tree, num_layers: int | None = None) -> Any:
    """Stacked form -> per-layer form (trees already per layer pass through). `num_layers` is
    needed only where a stacked subtree holds no arrays (optax's masked-out moments)."""
    return _map_decoder(tree, lambda lm: _unstack(lm, num_layers))


def is_stacked(tree) -> bool:
    """Whether a parameter-like tree holds its decoder layers stacked."""
    found = []
    _map_decoder(tree, lambda lm: found.append("layers" in lm) or lm)
    return any(found)
