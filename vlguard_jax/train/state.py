"""The training state, trainable and frozen parameters split apart (Levanter's rule), the
optimizer over the trainable part only (frozen weights get no gradients and no Adam moments), and
where each of them lives on the mesh: the state's, the optimizer's and the batch's shardings.

- LoRA: trainable = LoRA factors (learning rate `lr`) and the projector (`projector_lr`).
- Full: trainable = the projector and the whole language model; the vision tower stays frozen.
Frozen weights are kept in the compute dtype; trainable weights are float32 masters.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import optax
from flax import struct, traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlguard_jax import sharding
from vlguard_jax.errors import ConfigError
from vlguard_jax.families import Family
from vlguard_jax.models.layers import LORA_PARAMS
from vlguard_jax.train.config import OptimConfig

Params = dict[str, Any]  # a nested dict of arrays (or of their shapes or shardings)
# What a TrainState's leaves are: arrays in a run, NamedShardings for its shardings,
# ShapeDtypeStructs for a restore's target.
Leaf = TypeVar("Leaf", jax.Array, NamedSharding, jax.ShapeDtypeStruct)


@struct.dataclass
class TrainState(Generic[Leaf]):
    """What the training step carries and a checkpoint saves; frozen weights travel apart.

    step: int32 [], the steps done.
    params: the trainable weights, float32 masters: LoRA factors [in, r] and [r, out] and the
        projector (LoRA), or the projector and the whole language model (full); per layer, or
        with the decoder layers stacked [L, ...] under `scan_layers`.
    opt: the optimizer's state over `params` (optax: Adam moments shaped as `params`, counts).
    rng: uint32 [2], the run's PRNG key as data (a typed key inside the jitted step); each step
        and micro-batch folds in its index, so dropout does not depend on where a run resumed.
    """

    step: Leaf
    params: Params
    opt: optax.OptState
    rng: Leaf


def is_trainable(path: tuple[str, ...], mode: str, family: Family) -> bool:
    """Whether a parameter trains: never the family's frozen parts; in LoRA mode its projectors
    and the LoRA factors; in full mode the rest."""
    if path[0] in family.frozen_parts:
        return False
    if mode == "full":
        return True
    if mode == "lora":
        return path[0] in family.projectors or path[-1] in LORA_PARAMS
    raise ConfigError(f"train.mode must be 'lora' or 'full', not {mode!r}")


def as_trained(family: Family, train) -> Family:
    """The family as a run trains it: with `train.freeze_projector`, its projectors frozen too."""
    if not train.freeze_projector:
        return family
    return dataclasses.replace(family, frozen_parts=family.frozen_parts + family.projectors, projectors=())


def partition(params, mode: str, family: Family) -> tuple[Params, Params]:
    """(trainable, frozen) nested dicts that `merge` puts back together."""
    flat = traverse_util.flatten_dict(params)
    train = {k: v for k, v in flat.items() if is_trainable(k, mode, family)}
    frozen = {k: v for k, v in flat.items() if not is_trainable(k, mode, family)}
    return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)


def merge(trainable, frozen) -> Params:
    flat = traverse_util.flatten_dict(frozen)
    flat.update(traverse_util.flatten_dict(trainable))
    return traverse_util.unflatten_dict(flat)


def schedule(peak: float, total_steps: int, cfg: OptimConfig) -> optax.Schedule:
    """The learning rate at each step, for a group whose peak is `peak` (OptimConfig's rules)."""
    if cfg.schedule == "lavis":
        # MiniGPT-4's LinearWarmupCosineLRScheduler.step: the warmup test is on the total step, its
        # ramp on the step within the epoch; the cosine spans max_epoch x iters_per_epoch.
        per_epoch = cfg.iters_per_epoch or max(total_steps, 1)
        span = (cfg.max_epoch or 1) * per_epoch
        warmup = cfg.warmup_steps or math.ceil(span * cfg.warmup_ratio)
        start, floor = cfg.warmup_start_lr, cfg.min_lr

        def lavis(step):
            ramp = start + (peak - start) * (step % per_epoch) / max(warmup, 1)
            cosine = floor + (peak - floor) * 0.5 * (1 + jnp.cos(jnp.pi * step / span))
            return jnp.where(step < warmup, jnp.minimum(ramp, peak), cosine)

        return lavis
    warmup = math.ceil(total_steps * cfg.warmup_ratio)
    return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup, 0), max(total_steps, warmup + 1), 0.0)


def decays(params: Params) -> Params:
    """True for the weight matrices (kernels, LoRA factors, embeddings), False for biases and norm
    weights, by name: whether the layers are stacked or not (LAVIS decays ndim >= 2, no biases)."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: k[-1] not in ("bias", "weight") for k in flat})


def param_groups(trainable, family: Family) -> Params:
    """'projector' or 'model' per trainable leaf: the family's projectors have their own learning rate."""
    flat = traverse_util.flatten_dict(trainable)
    return traverse_util.unflatten_dict({k: "projector" if k[0] in family.projectors else "model" for k in flat})


def optimizer(cfg: OptimConfig, total_steps: int, trainable: Params, family: Family) -> optax.GradientTransformation:
    """AdamW per group, after global-norm clipping; `trainable` is the trainable tree (or its
    shapes), which fixes the groups with the `family`'s projectors."""

    def adamw(lr):
        return optax.adamw(
            schedule(lr, total_steps, cfg),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decays if cfg.decay_matrices_only else None,
        )

    groups = optax.multi_transform(
        {"model": adamw(cfg.lr), "projector": adamw(cfg.projector_lr)}, param_groups(trainable, family)
    )
    if cfg.grad_clip == 0:  # off: MiniGPT-v2's trainer does not clip
        return optax.chain(optax.identity(), groups)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), groups)


def cast_tree(tree, dtype) -> Any:
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def opt_shardings(opt: optax.GradientTransformation, trainable: Params, mesh: Mesh) -> optax.OptState:
    """Adam moments take their parameter's sharding (found by key path); counts are replicated."""
    abstract = jax.eval_shape(opt.init, trainable)
    replicated = NamedSharding(mesh, PartitionSpec())
    flat: dict[tuple, Any] = traverse_util.flatten_dict(trainable)
    by_path = {k: v.sharding for k, v in flat.items()}

    def pick(path, leaf):
        keys = tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey))
        for n in range(len(keys), 0, -1):
            if keys[-n:] in by_path and by_path[keys[-n:]].shard_shape(leaf.shape) is not None:
                return by_path[keys[-n:]]
        return replicated

    return jax.tree_util.tree_map_with_path(pick, abstract)


def state_shardings(opt: optax.GradientTransformation, trainable: Params, mesh: Mesh) -> TrainState[NamedSharding]:
    """Where each part of the state lives: the weights and moments as the trainable weights are
    sharded, the step and key replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    return TrainState(
        step=replicated,
        params=jax.tree.map(lambda x: x.sharding, trainable),
        opt=opt_shardings(opt, trainable, mesh),
        rng=replicated,
    )


def _fresh_state(opt: optax.GradientTransformation, seed: int):
    return lambda t: TrainState(
        step=jnp.int32(0), params=t, opt=opt.init(t), rng=jax.random.key_data(jax.random.key(seed))
    )


def init_state(
    opt: optax.GradientTransformation, trainable: Params, mesh: Mesh, seed: int = 0
) -> tuple[TrainState[jax.Array], TrainState[NamedSharding]]:
    """(state, its shardings): step 0, the trainable weights, optimizer state, rng."""
    shardings = state_shardings(opt, trainable, mesh)
    return jax.jit(_fresh_state(opt, seed), out_shardings=shardings)(trainable), shardings


def abstract_state(
    opt: optax.GradientTransformation, trainable: Params, shardings: TrainState[NamedSharding]
) -> TrainState[jax.ShapeDtypeStruct]:
    """The state's shapes and shardings, as a restore's target."""
    shapes = jax.eval_shape(_fresh_state(opt, 0), trainable)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def global_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, Any]:
    """This process's rows of a batch -> global arrays sharded over the batch axis."""
    spec = sharding.logical_to_spec(("batch",), mesh=mesh)

    def one(v):
        sh = NamedSharding(mesh, PartitionSpec(*spec, *([None] * (v.ndim - 1))))
        return jax.make_array_from_process_local_data(sh, v)

    return jax.tree.map(one, batch)  # an image input may be a dict of arrays
