"""A family's module and its parameters without a checkpoint: the module for a config, inputs that
touch every parameter, logical axes, abstract shapes (sharded on a mesh) and random init."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlguard_jax import sharding
from vlguard_jax.models.family import family_of


def build_model(config, **kw) -> nn.Module:
    """The Flax module of `config`'s family (`LlavaModel`, `TextOnlyModel`)."""
    return family_of(config).build(config, **kw)


def dummy_inputs(config, batch: int = 1) -> tuple[jax.Array, jax.Array | None]:
    """Inputs that touch every parameter (one image row), for `init` and shape tracing."""
    image = family_of(config).image_input(config)
    if image is None:
        return jnp.ones((batch, 2), jnp.int32), None
    ids = jnp.concatenate(
        [jnp.ones((batch, 1), jnp.int32), jnp.full((batch, image.tokens), config.image_token_index, jnp.int32)],
        axis=1,
    )
    return ids, jnp.asarray(image.blank(batch))


def _boxed_init(model, rng):
    ids, pixels = dummy_inputs(model.config)
    return model.init(rng, ids, pixels)["params"]


def param_axes(model) -> Any:
    """Tree of logical axis-name tuples, one per parameter."""
    boxed = jax.eval_shape(lambda: _boxed_init(model, jax.random.key(0)))
    return jax.tree.map(lambda b: tuple(b.names), boxed, is_leaf=lambda b: isinstance(b, nn.LogicallyPartitioned))


def abstract_params(model, mesh=None) -> Any:
    """ShapeDtypeStructs of the parameters, with shardings when a mesh is given."""
    boxed = jax.eval_shape(lambda: _boxed_init(model, jax.random.key(0)))
    shapes = nn.unbox(boxed)
    if mesh is None:
        return shapes
    shardings = sharding.tree_shardings(param_axes(model), shapes, mesh)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def init_params(model, rng, mesh=None) -> Any:
    """Random parameters, created directly in their sharded layout when a mesh is given."""
    init = lambda r: nn.unbox(_boxed_init(model, r))
    if mesh is None:
        return jax.jit(init)(rng)
    out = jax.tree.map(lambda s: s.sharding, abstract_params(model, mesh))
    return jax.jit(init, out_shardings=out)(rng)
