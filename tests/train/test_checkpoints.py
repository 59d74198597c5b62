"""Training checkpoints hold a TrainState under the names the state dict had (step, params, opt,
rng), so a workdir written before TrainState resumes into it unchanged."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlguard_jax import sharding
from vlguard_jax.train.checkpoints import Checkpoints
from vlguard_jax.train.loop import abstract_state, init_state
from vlguard_jax.train.state import TrainState


def test_a_checkpoint_saved_as_a_dict_restores_as_a_train_state(tmp_path):
    mesh = sharding.make_mesh((1, 1, 1))
    trainable = {"projector": {"kernel": jnp.arange(6.0).reshape(2, 3)}, "lora_a": jnp.ones((3,))}
    opt = optax.adamw(1e-3)
    state, shardings = init_state(opt, trainable, mesh, seed=3)
    state = dataclasses.replace(state, step=jnp.int32(7), params=jax.tree.map(lambda x: x + 1, state.params))
    old = Checkpoints(tmp_path, every=1, keep=2)
    old.save(7, {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}, {"pos": 7}, {"m": 1}, force=True)
    old.wait()
    old.close()
    ckpt = Checkpoints(tmp_path, every=1, keep=2)
    restored, data, meta = ckpt.restore(7, abstract_state(opt, trainable, shardings))
    ckpt.close()
    assert isinstance(restored, TrainState) and (data, meta) == ({"pos": 7}, {"m": 1})
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
