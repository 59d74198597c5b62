"""The jitted training step: micro-batch accumulation in a `lax.scan`, a token-mean cross-entropy
over supervised tokens computed in sequence chunks (never the whole [batch, length, vocab]
float32 logits), gradients for trainable weights only, and a finite check.

The state is a `TrainState` (train.state); frozen weights come in separately. `jit_train_step`
is the step as the loop (and the benchmarks) run it: jitted, sharded, the state donated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from vlguard_jax import sharding
from vlguard_jax.data.tokenization import IGNORE
from vlguard_jax.train.state import Params, TrainState, merge


def token_loss_sums(
    model, params, batch, rng=None, chunk: int = 512, label_budget: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """(sum of token cross-entropies, number of supervised tokens) for one micro-batch.

    With `label_budget` K, each row's supervised positions are gathered first (stable order) and
    only K positions per row reach the lm_head; K must be at least the row's supervised count."""
    rngs = {"dropout": rng} if rng is not None else None
    hidden, _ = model.apply(
        {"params": params}, batch["input_ids"], batch["pixel_values"], return_hidden=True, rngs=rngs
    )
    h, y = hidden[:, :-1], batch["labels"][:, 1:]
    if label_budget is not None and label_budget < y.shape[1]:
        order = jnp.argsort(y == IGNORE, axis=1, stable=True)[:, :label_budget]
        h = jnp.take_along_axis(h, order[..., None], axis=1)
        y = jnp.take_along_axis(y, order, axis=1)
    b, t, d = h.shape
    c = min(chunk, t)
    pad = -t % c
    h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
    y = jnp.pad(y, ((0, 0), (0, pad)), constant_values=IGNORE)
    h = h.reshape(b, -1, c, d).swapaxes(0, 1)
    y = y.reshape(b, -1, c).swapaxes(0, 1)

    @jax.checkpoint
    def one(hc, yc):
        logits = model.apply({"params": params}, hc, method=model.logits).astype(jnp.float32)
        valid = yc != IGNORE
        picked = jnp.take_along_axis(logits, jnp.where(valid, yc, 0)[..., None], axis=-1)[..., 0]
        return jnp.sum(jnp.where(valid, jax.nn.logsumexp(logits, axis=-1) - picked, 0.0)), valid.sum()

    def body(carry, xs):
        s, n = one(*xs)
        return (carry[0] + s, carry[1] + n), None

    (total, count), _ = jax.lax.scan(body, (jnp.float32(0), jnp.int32(0)), (h, y))
    return total, count


def make_train_step(
    model,
    optimizer: optax.GradientTransformation,
    accum_steps: int,
    loss_chunk: int = 512,
    label_budget: int | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """step(state, frozen, batch) -> (state, metrics). `batch` holds the global batch [B, ...];
    it is cut into `accum_steps` micro-batches of rows i, i + accum, i + 2*accum, ... so every
    device keeps its own rows."""

    def micro_batches(batch):
        def cut(x):
            x = x.reshape((x.shape[0] // accum_steps, accum_steps) + x.shape[1:])
            return jnp.swapaxes(x, 0, 1)

        return jax.tree.map(cut, batch)

    def step(state: TrainState, frozen, batch):
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(trainable, mb, key):
            return token_loss_sums(model, merge(trainable, frozen), mb, key, loss_chunk, label_budget)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def body(carry, xs):
            i, mb = xs
            (s, n), g = grad_fn(state.params, mb, jax.random.fold_in(rng, i))
            gsum, ssum, nsum = carry
            return (jax.tree.map(jnp.add, gsum, g), ssum + s, nsum + n), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (gsum, ssum, count), _ = jax.lax.scan(
            body, (zeros, jnp.float32(0), jnp.int32(0)), (jnp.arange(accum_steps), micro_batches(batch))
        )
        denom = jnp.maximum(count, 1).astype(jnp.float32)
        grads = jax.tree.map(lambda g: g / denom, gsum)
        loss = ssum / denom
        grad_norm = optax.tree.norm(grads) if hasattr(optax, "tree") else optax.global_norm(grads)
        updates, opt = optimizer.update(grads, state.opt, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = TrainState(step=state.step + 1, params=cast(Params, params), opt=opt, rng=state.rng)
        # A non-finite step leaves the state untouched; the loop stops the run on it.
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
        return new, {"loss": loss, "grad_norm": grad_norm, "tokens": count, "finite": finite}

    return step


StepFn = Callable[[TrainState, Params, dict[str, jax.Array], int], tuple[TrainState, dict[str, jax.Array]]]


def jit_train_step(
    model,
    opt: optax.GradientTransformation,
    accum: int,
    loss_chunk: int,
    mesh: Mesh,
    shardings: TrainState[NamedSharding],
) -> StepFn:
    """The jitted step(state, frozen, batch, label_budget) -> (state, metrics); the state is
    donated. `label_budget` (static) bounds the supervised positions per row, so the lm_head runs
    only there. The state carries its key as data; inside the step it is a typed key."""

    def wrapped(state, frozen, batch, label_budget):
        with sharding.use_mesh(mesh):
            step_fn = make_train_step(model, opt, accum, loss_chunk, label_budget)
            state = dataclasses.replace(state, rng=jax.random.wrap_key_data(state.rng))
            new, metrics = step_fn(state, frozen, batch)
            return dataclasses.replace(new, rng=jax.random.key_data(new.rng)), metrics

    return jax.jit(wrapped, donate_argnums=(0,), static_argnums=(3,), out_shardings=(shardings, None))


def label_budget(labels: np.ndarray, length: int, quantum: int = 64) -> int:
    """Most supervised (shifted) positions in any row of this process's batch, rounded up to
    `quantum`, agreed on by all processes."""
    most = int((np.asarray(labels)[:, 1:] != IGNORE).sum(axis=1).max()) if len(labels) else 0
    if jax.process_count() > 1:
        most = int(np.max(multihost_utils.process_allgather(np.int32(most))))
    return max(quantum, min(length - 1, -(-most // quantum) * quantum))
