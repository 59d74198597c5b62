"""The training state, trainable and frozen parameters split apart (Levanter's rule), and the
optimizer over the trainable part only: frozen weights get no gradients and no Adam moments.

- LoRA: trainable = LoRA factors (learning rate `lr`) and the projector (`projector_lr`).
- Full: trainable = the projector and the whole language model; the vision tower stays frozen.
Frozen weights are kept in the compute dtype; trainable weights are float32 masters.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct, traverse_util

from vlguard_jax.errors import ConfigError
from vlguard_jax.models.layers import LORA_PARAMS


@struct.dataclass
class TrainState:
    """What the training step carries and a checkpoint saves; frozen weights travel apart.

    step: int32 [], the steps done.
    params: the trainable weights, float32 masters: LoRA factors [in, r] and [r, out] and the
        projector (LoRA), or the projector and the whole language model (full); per layer, or
        with the decoder layers stacked [L, ...] under `scan_layers`.
    opt: the optimizer's state over `params` (optax: Adam moments shaped as `params`, counts).
    rng: uint32 [2], the run's PRNG key as data (a typed key inside the jitted step); each step
        and micro-batch folds in its index, so dropout does not depend on where a run resumed.
    """

    step: Any  # Any: the same tree also holds shapes or shardings
    params: Any
    opt: Any
    rng: Any


def is_trainable(path: tuple[str, ...], mode: str) -> bool:
    if path[0] == "vision_tower":
        return False
    if mode == "full":
        return True
    if mode == "lora":
        return path[0] == "projector" or path[-1] in LORA_PARAMS
    raise ConfigError(f"train.mode must be 'lora' or 'full', not {mode!r}")


def partition(params, mode: str):
    """(trainable, frozen) nested dicts that `merge` puts back together."""
    flat = traverse_util.flatten_dict(params)
    train = {k: v for k, v in flat.items() if is_trainable(k, mode)}
    frozen = {k: v for k, v in flat.items() if not is_trainable(k, mode)}
    return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)


def merge(trainable, frozen):
    flat = traverse_util.flatten_dict(frozen)
    flat.update(traverse_util.flatten_dict(trainable))
    return traverse_util.unflatten_dict(flat)


def schedule(peak: float, total_steps: int, warmup_ratio: float):
    """Linear warmup over ceil(ratio * total) steps, then cosine to 0 at `total_steps` (HF's rule)."""
    warmup = math.ceil(total_steps * warmup_ratio)
    return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup, 0), max(total_steps, warmup + 1), 0.0)


def param_groups(trainable):
    """'projector' or 'model' per trainable leaf: the projector has its own learning rate."""
    flat = traverse_util.flatten_dict(trainable)
    return traverse_util.unflatten_dict({k: "projector" if k[0] == "projector" else "model" for k in flat})


def optimizer(cfg, total_steps: int, trainable) -> optax.GradientTransformation:
    """AdamW per group, after global-norm clipping; `cfg` is the config's `optim` block and
    `trainable` the trainable tree (or its shapes), which fixes the groups."""

    def adamw(lr):
        return optax.adamw(
            schedule(lr, total_steps, cfg.warmup_ratio),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        )

    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.multi_transform({"model": adamw(cfg.lr), "projector": adamw(cfg.projector_lr)}, param_groups(trainable)),
    )


def cast_tree(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
