"""A model's parameters without a checkpoint: logical axes, abstract shapes (sharded on a mesh)
and random init, traced from the module's own `example_inputs`."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from vlguard_jax import sharding


def _boxed_init(model, rng):
    return model.init(rng, *model.example_inputs())["params"]


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
