"""Batched generation: one prefill over the left-padded prompt batch (with its images), then a
`lax.while_loop` decode inside `jit` with per-row done flags (Gemma's sampler shape).

- The KV cache is preallocated for prompt + new tokens and sharded by the model's logical rules
  (batch over the data axes, KV heads over `tensor`).
- Positions count real tokens only, so a row's output does not depend on how much padding its
  batch needs; random draws use per-row keys (seed, row id, step), so sampled output does not
  depend on which prompts share the batch either.
- Prompt lengths are bucketed (multiples of `bucket`) and batches are filled to `batch_size`, so
  a benchmark compiles a handful of programs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from vlguard_jax import sharding
from vlguard_jax.data.images import put, shapes
from vlguard_jax.errors import InputError, oom_hint
from vlguard_jax.families import family_of
from vlguard_jax.models.llama import KVCache, init_cache


def batch_indices(keys: list, size: int) -> list[list[int]]:
    """Indices of the prompts (one key each: their image inputs' shapes) in batches of at most
    `size`, in order, where only prompts of one key share a batch; keys in order of first use."""
    groups: dict = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return [idx[i : i + size] for idx in groups.values() for i in range(0, len(idx), size)]


@dataclasses.dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    max_new_tokens: int = 256
    min_new_tokens: int = 0  # EOS is masked until this many tokens are out (transformers' rule)

    def __post_init__(self):
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise InputError(f"--temperature must be a finite number at least 0 (0: greedy), got {self.temperature}")
        if self.top_k < 0:
            raise InputError(f"--top-k must be at least 0 (0: off), got {self.top_k}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise InputError(f"--top-p must be in (0, 1] (1: off), got {self.top_p}")
        if self.max_new_tokens < 1:
            raise InputError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.min_new_tokens < 0:
            raise InputError(f"--min-new-tokens must be at least 0, got {self.min_new_tokens}")
        if self.min_new_tokens > self.max_new_tokens:
            raise InputError(
                f"--min-new-tokens {self.min_new_tokens} is more than --max-new-tokens {self.max_new_tokens}"
            )


def choose(logits, key, s: Sampling) -> jax.Array:
    """Next token per row from float32 logits [B, V]; `key` holds one key per row."""
    if s.temperature <= 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / s.temperature
    if s.top_k > 0:
        kth = jax.lax.top_k(logits, s.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if s.top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop_sorted = jnp.cumsum(probs, axis=-1) - probs >= s.top_p
        drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(drop_sorted)
        logits = jnp.where(drop, -jnp.inf, logits)
    return jax.vmap(jax.random.categorical)(key, logits).astype(jnp.int32)


def ban_eos(logits, eos, step, s: Sampling) -> jax.Array:
    """EOS at -inf while fewer than `min_new_tokens` tokens have been generated (`step` of them)."""
    if s.min_new_tokens <= 0:
        return logits
    is_eos = jnp.isin(jnp.arange(logits.shape[-1]), eos)
    return jnp.where(is_eos[None] & (step < s.min_new_tokens), -jnp.inf, logits)


@struct.dataclass
class DecodeState:
    """The decode loop's carry (Gemma's `SamplingState`). B rows, N = `max_new_tokens`.

    step: int32 [], tokens generated so far; the next one goes to `out[:, step]`.
    out: int32 [B, N], the generated ids; `pad_id` past a row's end and from `step` on.
    done: bool [B], the row has produced an end-of-sequence id.
    cache: the KV cache (models.llama.KVCache) holding the prompt and the generated tokens.
    last: int32 [B], the token generated last: the next step's input.
    position: int32 [B], that token's position (real tokens only: padding is not counted).
    """

    step: jax.Array
    out: jax.Array
    done: jax.Array
    cache: KVCache
    last: jax.Array
    position: jax.Array


@dataclasses.dataclass(frozen=True)
class Decoder:
    """What one compiled generation program fixes: the model, the end-of-sequence ids (int32
    [E]), the id written after a row's end, the sampling settings and the cache's dtype.
    `decoder(params, ids, mask, pixels, row_ids, seed)` prefills the left-padded prompts (ids and
    mask [B, P]; the batch's image inputs, e.g. pixels [B, 3, H, W], or None; row_ids [B] for the
    per-row random keys) and decodes to int32 [B, N]."""

    model: Any
    eos: jax.Array
    pad_id: int
    sampling: Sampling
    cache_dtype: Any

    def __call__(self, params, ids, mask, pixels, row_ids, seed) -> jax.Array:
        state = self.prefill(params, ids, mask, pixels, row_ids, seed)
        return jax.lax.while_loop(self.running, lambda st: self.step(params, row_ids, seed, st), state).out

    def keys(self, seed, row_ids, step) -> jax.Array:
        """One key per row, from (seed, row id, step): a row's draws do not depend on its batch."""
        base = jax.random.key(seed)
        return jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(base, r), step))(row_ids)

    def next_token(self, logits, keys, step) -> jax.Array:
        return choose(ban_eos(logits, self.eos, step, self.sampling), keys, self.sampling)

    def prefill(self, params, ids, mask, pixels, row_ids, seed) -> DecodeState:
        model, s = self.model, self.sampling
        b, p = ids.shape
        positions, following = model.prompt_positions(ids, mask, pixels)  # the model's: 1D RoPE, or several streams
        cache = init_cache(model.config.text, b, p + s.max_new_tokens, self.cache_dtype, stacked=model.scan_layers)
        hidden, cache = model.apply(
            {"params": params}, ids, pixels, attention_mask=mask, positions=positions, cache=cache, return_hidden=True
        )
        logits = model.apply({"params": params}, hidden[:, -1:], method=model.logits)[:, 0].astype(jnp.float32)
        first = self.next_token(logits, self.keys(seed, row_ids, 0), 0)
        out = jnp.full((b, s.max_new_tokens), self.pad_id, jnp.int32).at[:, 0].set(first)
        return DecodeState(
            step=jnp.int32(1),
            out=out,
            done=jnp.isin(first, self.eos),
            cache=cache,
            last=first,
            position=following,
        )

    def running(self, state: DecodeState) -> jax.Array:
        return (state.step < self.sampling.max_new_tokens) & ~jnp.all(state.done)

    def step(self, params, row_ids, seed, state: DecodeState) -> DecodeState:
        model, b = self.model, state.last.shape[0]
        h, cache = model.apply(
            {"params": params},
            state.last[:, None],
            attention_mask=jnp.ones((b, 1), jnp.int32),
            positions=state.position[:, None],
            cache=state.cache,
            return_hidden=True,
        )
        logits = model.apply({"params": params}, h, method=model.logits)[:, 0].astype(jnp.float32)
        tok = self.next_token(logits, self.keys(seed, row_ids, state.step), state.step)
        tok = jnp.where(state.done, self.pad_id, tok)  # finished rows stop changing
        return DecodeState(
            step=state.step + 1,
            out=jax.lax.dynamic_update_slice(state.out, tok[:, None], (0, state.step)),
            done=state.done | jnp.isin(tok, self.eos),
            cache=cache,
            last=tok,
            position=state.position + 1,
        )


class Generator:
    """`Generator(model, params, ...)(prompts, pixels, sampling, seed)`; prompts are id lists (image
    positions already expanded), pixels one image input (the family's `ImageInput`: an array, or a
    dict of arrays) or None per prompt; prompts whose inputs differ in shape go in different batches."""

    def __init__(
        self,
        model,
        params,
        *,
        eos_ids,
        pad_id: int = 0,
        mesh=None,
        batch_size: int = 8,
        bucket: int = 64,
        cache_dtype=None,
    ):
        self.model, self.params, self.mesh = model, params, mesh
        self._eos_set = set(np.atleast_1d(eos_ids).tolist())
        self.eos = jnp.asarray(sorted(self._eos_set), jnp.int32)
        self.pad_id, self.batch_size, self.bucket = pad_id, batch_size, bucket
        self.cache_dtype = cache_dtype or model.dtype
        self._fn = functools.lru_cache(maxsize=None)(self._compile)

    def _compile(self, s: Sampling):
        def run(params, ids, mask, pixels, row_ids, seed):
            with sharding.use_mesh(self.mesh):
                return Decoder(self.model, self.eos, self.pad_id, s, self.cache_dtype)(
                    params, ids, mask, pixels, row_ids, seed
                )

        return jax.jit(run)

    def batches(self, n: int, keys: list | None = None) -> list[list[int]]:
        return batch_indices(keys or [None] * n, self.batch_size)

    def __call__(
        self, prompts: list[list[int]], pixels: list, sampling: Sampling = Sampling(), seed: int = 0, on_batch=None
    ) -> list[list[int]]:
        """Generated ids per prompt, cut after the first EOS (which is kept). A prompt that, with
        `max_new_tokens`, does not fit the model's positions is refused before anything runs."""
        image = family_of(self.model.config).image_input(self.model.config)  # None: a text-only model
        for i, x in enumerate(pixels):
            if x is not None and image is None:
                raise InputError(f"prompt {i}: this model is text-only and takes no image")
        # Rows batch together where their image inputs have one shape; a row without an image
        # takes the blank of its batch's shape (the family's default shape where it has no image).
        default = None if image is None else shapes(image.rule.blank((), image.channels))
        keys = [default if x is None else shapes(x) for x in pixels]
        positions = self.model.config.text.max_position_embeddings
        for i, p in enumerate(prompts):
            if len(p) + sampling.max_new_tokens > positions:
                raise InputError(
                    f"prompt {i}: {len(p)} tokens plus {sampling.max_new_tokens} new ones exceed the "
                    f"model's {positions} positions; shorten it or lower max_new_tokens"
                )
        results: list = [None] * len(prompts)
        for idx in self.batches(len(prompts), keys):
            longest = max(len(prompts[i]) for i in idx)
            p = -(-longest // self.bucket) * self.bucket
            b = self.batch_size
            ids = np.full((b, p), self.pad_id, np.int32)
            mask = np.zeros((b, p), np.int32)
            like = next((pixels[i] for i in idx if pixels[i] is not None), None)
            pix = None if image is None else image.blank(b, () if like is None else image.rule.key_of(like))
            rows = np.zeros(b, np.int32)
            for r, i in enumerate(idx):
                ids[r, p - len(prompts[i]) :] = prompts[i]
                mask[r, p - len(prompts[i]) :] = 1
                rows[r] = i
                if pixels[i] is not None:
                    put(pix, r, pixels[i])
            for r in range(len(idx), b):  # filler rows: one real token, discarded
                ids[r, -1], mask[r, -1] = self.pad_id, 1
            with oom_hint(
                f"out of device memory generating a batch of {b} prompts of up to {p} tokens "
                f"plus {sampling.max_new_tokens} new ones; lower the batch size (--batch-size {max(1, b // 2)})"
            ):
                out = np.asarray(self._fn(sampling)(self.params, ids, mask, pix, rows, seed))
            for r, i in enumerate(idx):
                toks = out[r].tolist()
                cut = next((k + 1 for k, t in enumerate(toks) if t in self._eos_set), len(toks))
                results[i] = toks[:cut]
            if on_batch is not None:
                on_batch(idx, [results[i] for i in idx])
        return results
