"""The Llama decoder (Hugging Face `LlamaModel` + `lm_head` semantics) with a functional KV cache.

RoPE follows Hugging Face's `rotate_half` convention, so converted q/k weights need no permutation.
The cache is an explicit pytree (`init_cache`) that goes in and comes back out of each call, so the
generator can carry it through a `lax.while_loop`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from vlguard_jax.models.attention import attention, attention_cached
from vlguard_jax.models.config import LoraSpec, TextConfig
from vlguard_jax.models.layers import Dense, Dtype, RMSNorm, param_with_axes
from vlguard_jax.sharding import constrain

ACT = ("batch", "length", "act_embed")
# The part every family's model holds its Llama decoder under (`self.language_model`): the tree
# `stacking` moves between its per-layer and scanned forms.
DECODER = "language_model"
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_all": jax.checkpoint_policies.dots_saveable,
}


def _lora(spec: LoraSpec | None, name: str) -> LoraSpec | None:
    return spec.wants(name) if spec is not None else None


def _key(key: jax.Array | None, k: int) -> jax.Array | None:
    """The k-th child of a dropout key (None stays None: no dropout)."""
    return None if key is None else jax.random.fold_in(key, k)


def rope_inv_freq(c: TextConfig) -> np.ndarray:
    """Inverse frequencies in float32, computed as transformers does (default or llama3 rule)."""
    dim = c.head_dim
    inv = (1.0 / (np.float32(c.rope_theta) ** (np.arange(0, dim, 2, dtype=np.float32) / dim))).astype(np.float32)
    rs = c.rope_scaling_dict
    if rs and rs.get("rope_type") == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        lo_wl, hi_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        scaled = np.where(wl > lo_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wl < hi_wl) & ~(wl > lo_wl)
        inv = np.where(medium, smoothed, scaled).astype(np.float32)
    return inv


def prompt_positions(mask) -> tuple[jax.Array, jax.Array]:
    """1D RoPE positions of left-padded prompts (mask [B, P]): each row's real tokens count from 0,
    so its output does not depend on its padding. Returns (positions [B, P], the next one [B])."""
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)
    return positions, positions[:, -1] + 1


def stream_positions(positions, sections) -> jax.Array:
    """Multimodal RoPE's positions per frequency: positions [S, B, T] of S streams -> [B, T, F],
    frequency j taking the stream whose section holds it (transformers' `mrope_section` split)."""
    stream = np.repeat(np.arange(len(sections)), sections)
    return jnp.moveaxis(positions.astype(jnp.float32)[stream], 0, -1)


def rope_tables(positions, inv_freq, dtype, sections=None) -> tuple[jax.Array, jax.Array]:
    """(cos, sin) of [B, T, head_dim] for `apply_rope`, computed once per forward for every layer.
    `positions` [B, T], or [S, B, T] with `sections` (multimodal RoPE, `stream_positions`).
    The barrier asks XLA to keep them materialised rather than evaluate sin and cos again in each
    q and k product, for every layer and head; the CPU pipeline drops it (see static_rope_tables)."""
    if positions.ndim == 3:
        freqs = stream_positions(positions, sections) * jnp.asarray(inv_freq)[None, None]
    else:
        freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jax.lax.optimization_barrier((jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)))


def static_rope_tables(t: int, inv_freq, dtype) -> tuple[jax.Array, jax.Array]:
    """`rope_tables` for positions 0..t-1 of every row (training, scoring), evaluated while tracing
    and so compiled in as constants [1, t, head_dim], the same values. On the CPU the barrier above
    does not survive XLA's pipeline: it fuses sin and cos into every per-head slice of q and k and
    into their gradients, 5-10% of a small-preset training step; constants leave nothing to redo."""
    with jax.ensure_compile_time_eval():
        return rope_tables(jnp.arange(t)[None], inv_freq, dtype)


def apply_rope(x, rope) -> jax.Array:
    """x: [B, T, N, H]; rope: `rope_tables` for its positions."""
    cos, sin = (t[:, :, None, :] for t in rope)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


@struct.dataclass
class KVCache:
    """The decoder's KV cache, a pytree that goes into and comes back out of each call. B rows,
    S slots (prompt plus new tokens), L layers, KV heads of head_dim D.

    layers: per layer a (keys, values) pair of [B, KV, S, D] (heads-major, the layout
        `attention_cached` reads without copying); for a model with `scan_layers`, one pair of
        [L, B, KV, S, D].
    valid: bool [B, S], the slots that hold a real token (left padding does not).
    index: int32 [], the next slot to write; every row writes the same slot.
    """

    layers: Any
    valid: jax.Array
    index: jax.Array


def init_cache(c: TextConfig, batch: int, max_length: int, dtype=jnp.bfloat16, stacked: bool = False) -> KVCache:
    """An empty KV cache of `max_length` slots (see `KVCache`); `stacked` for a model with
    `scan_layers`."""
    kv, d, n = c.num_key_value_heads, c.head_dim, c.num_hidden_layers
    layers = (
        (jnp.zeros((n, batch, kv, max_length, d), dtype),) * 2
        if stacked
        else [
            (jnp.zeros((batch, kv, max_length, d), dtype), jnp.zeros((batch, kv, max_length, d), dtype))
            for _ in range(n)
        ]
    )
    return KVCache(layers=layers, valid=jnp.zeros((batch, max_length), bool), index=jnp.zeros((), jnp.int32))


def stack_layers(params: dict, num_layers: int) -> dict:
    """Per-layer parameters (`layers_0` ... `layers_{L-1}`, the format on disk) -> one `layers`
    tree whose leaves have a leading axis L, as a model with `scan_layers` holds them."""
    per_layer = [params[f"layers_{i}"] for i in range(num_layers)]
    rest = {k: v for k, v in params.items() if not k.startswith("layers_")}
    return {**rest, "layers": jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)}


def unstack_layers(params: dict) -> dict:
    """The inverse of `stack_layers`."""
    layers = params["layers"]
    n = jax.tree.leaves(layers)[0].shape[0]
    rest = {k: v for k, v in params.items() if k != "layers"}
    return {**rest, **{f"layers_{i}": jax.tree.map(lambda x, i=i: x[i], layers) for i in range(n)}}


class LlamaAttention(nn.Module):
    config: TextConfig
    dtype: Dtype
    param_dtype: Dtype
    attn_impl: str | None = None
    lora: LoraSpec | None = None

    @nn.compact
    def __call__(self, x, rope, mask, layer_cache, cache_index, dropout_key=None):
        c = self.config
        b, t, _ = x.shape
        kw: dict[str, Any] = dict(
            use_bias=c.attention_bias or c.qkv_bias, dtype=self.dtype, param_dtype=self.param_dtype
        )
        q = Dense(
            c.num_attention_heads * c.head_dim, ("embed", "heads"), name="q_proj", lora=_lora(self.lora, "q_proj"), **kw
        )(x, _key(dropout_key, 0))
        k = Dense(
            c.num_key_value_heads * c.head_dim,
            ("embed", "kv_heads"),
            name="k_proj",
            lora=_lora(self.lora, "k_proj"),
            **kw,
        )(x, _key(dropout_key, 1))
        v = Dense(
            c.num_key_value_heads * c.head_dim,
            ("embed", "kv_heads"),
            name="v_proj",
            lora=_lora(self.lora, "v_proj"),
            **kw,
        )(x, _key(dropout_key, 2))
        q = q.reshape(b, t, c.num_attention_heads, c.head_dim)
        k = k.reshape(b, t, c.num_key_value_heads, c.head_dim)
        v = v.reshape(b, t, c.num_key_value_heads, c.head_dim)
        q = constrain(apply_rope(q, rope), ("batch", "length", "act_heads", None))
        k = constrain(apply_rope(k, rope), ("batch", "length", "act_kv_heads", None))
        v = constrain(v, ("batch", "length", "act_kv_heads", None))
        new_cache = None
        if layer_cache is not None:
            kc, vc = layer_cache
            kc = jax.lax.dynamic_update_slice(kc, k.transpose(0, 2, 1, 3).astype(kc.dtype), (0, 0, cache_index, 0))
            vc = jax.lax.dynamic_update_slice(vc, v.transpose(0, 2, 1, 3).astype(vc.dtype), (0, 0, cache_index, 0))
            kc = constrain(kc, ("batch", "act_kv_heads", "cache_length", None))
            vc = constrain(vc, ("batch", "act_kv_heads", "cache_length", None))
            new_cache = (kc, vc)
            o = attention_cached(q, kc.astype(self.dtype), vc.astype(self.dtype), mask)
        else:
            o = attention(q, k, v, mask=mask, is_causal=mask is None, implementation=self.attn_impl)
        o = o.reshape(b, t, c.num_attention_heads * c.head_dim)
        kw["use_bias"] = c.attention_bias
        out = Dense(c.hidden_size, ("heads", "embed"), name="o_proj", lora=_lora(self.lora, "o_proj"), **kw)(
            o, _key(dropout_key, 3)
        )
        return out, new_cache


class LlamaMLP(nn.Module):
    config: TextConfig
    dtype: Dtype
    param_dtype: Dtype
    lora: LoraSpec | None = None

    @nn.compact
    def __call__(self, x, dropout_key=None):
        c = self.config
        kw: dict[str, Any] = dict(use_bias=c.mlp_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        gate = Dense(c.intermediate_size, ("embed", "mlp"), name="gate_proj", lora=_lora(self.lora, "gate_proj"), **kw)(
            x, _key(dropout_key, 0)
        )
        up = Dense(c.intermediate_size, ("embed", "mlp"), name="up_proj", lora=_lora(self.lora, "up_proj"), **kw)(
            x, _key(dropout_key, 1)
        )
        h = constrain(jax.nn.silu(gate) * up, ("batch", "length", "act_mlp"))
        return Dense(c.hidden_size, ("mlp", "embed"), name="down_proj", lora=_lora(self.lora, "down_proj"), **kw)(
            h, _key(dropout_key, 2)
        )


class LlamaDecoderLayer(nn.Module):
    config: TextConfig
    dtype: Dtype
    param_dtype: Dtype
    attn_impl: str | None = None
    lora: LoraSpec | None = None

    @nn.compact
    def __call__(self, x, rope, mask, layer_cache, cache_index, dropout_key=None):
        """`dropout_key`: this layer's LoRA dropout key (None: no dropout), one per layer whatever
        the form (see LlamaForCausalLM.dropout_keys)."""
        c = self.config
        kw: dict[str, Any] = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = RMSNorm(c.rms_norm_eps, name="input_layernorm", **kw)(x)
        h, new_cache = LlamaAttention(c, attn_impl=self.attn_impl, lora=self.lora, name="self_attn", **kw)(
            h, rope, mask, layer_cache, cache_index, _key(dropout_key, 0)
        )
        x = x + h
        h = RMSNorm(c.rms_norm_eps, name="post_attention_layernorm", **kw)(x)
        x = constrain(x + LlamaMLP(c, lora=self.lora, name="mlp", **kw)(h, _key(dropout_key, 1)), ACT)
        return x, new_cache


def attention_mask(t: int, attn_mask, cache: KVCache | None) -> jax.Array | None:
    """Boolean [B, 1, T, S] mask, or None when plain causal attention is exact.

    Without a cache and without padding information, right-padded rows need only the causal mask:
    no real token ever attends to the padding after it.
    """
    if cache is None:
        if attn_mask is None:
            return None
        causal = jnp.tril(jnp.ones((t, t), bool))
        return (causal[None] & attn_mask.astype(bool)[:, None, :])[:, None]
    s = cache.valid.shape[1]
    slot = jnp.arange(s)[None, :]
    query_slot = cache.index + jnp.arange(t)[:, None]
    return ((slot <= query_slot)[None] & cache.valid[:, None, :])[:, None]


class LlamaForCausalLM(nn.Module):
    """Embedding, decoder layers, final norm and lm_head; call `embed`, `__call__`, `logits`."""

    config: TextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attn_impl: str | None = None
    remat_policy: str = "none"
    lora: LoraSpec | None = None
    scan_layers: bool = False  # one scanned layer over stacked weights: compile time flat in depth

    def setup(self) -> None:
        c = self.config
        kw: dict[str, Any] = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.embed_tokens = param_with_axes(
            self,
            "embed_tokens",
            nn.initializers.normal(0.02),
            (c.vocab_size, c.hidden_size),
            self.param_dtype,
            ("vocab", "embed"),
        )
        layer_cls = LlamaDecoderLayer
        policy = REMAT_POLICIES[self.remat_policy]
        if self.remat_policy != "none":
            # Inside a scan the loop itself keeps XLA from merging recomputation away.
            layer_cls = nn.remat(LlamaDecoderLayer, policy=policy, prevent_cse=not self.scan_layers)
        if self.scan_layers:
            self.layers: Any = nn.scan(
                layer_cls,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast, 0),  # pyright: ignore[reportArgumentType] (flax annotates int; a tuple per argument is documented)
                length=c.num_hidden_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(c, attn_impl=self.attn_impl, lora=self.lora, name="layers", **kw)
        else:
            self.layers = [
                layer_cls(c, attn_impl=self.attn_impl, lora=self.lora, name=f"layers_{i}", **kw)
                for i in range(c.num_hidden_layers)
            ]
        self.norm = RMSNorm(c.rms_norm_eps, **kw)
        if not c.tie_word_embeddings:
            self.lm_head = Dense(c.vocab_size, ("embed", "vocab"), **kw)

    def embed(self, input_ids) -> jax.Array:
        # Ids outside the vocabulary (an image placeholder such as -200) read row 0; the caller
        # overwrites those positions.
        ids = constrain(
            jnp.where((input_ids < 0) | (input_ids >= self.config.vocab_size), 0, input_ids), ("batch", "length")
        )
        # The table is gathered whole along `embed` first: a lookup from its fsdp shards would give
        # rows split along `embed`, which XLA can only turn into batch shards by replicating them.
        table = constrain(self.embed_tokens, ("vocab", None))
        return constrain(jnp.take(table, ids, axis=0).astype(self.dtype), ACT)

    def __call__(self, x, positions=None, attn_mask=None, cache: KVCache | None = None):
        """x: input embeddings [B, T, D]; positions [B, T], or [S, B, T] for a model with
        `mrope_section` (a [B, T] one is every stream's). Returns (final hidden states, updated
        cache or None)."""
        b, t, _ = x.shape
        index = cache.index if cache is not None else 0
        inv_freq = rope_inv_freq(self.config)
        if positions is None and cache is None:
            rope = static_rope_tables(t, inv_freq, self.dtype)
        else:
            if positions is None:
                positions = jnp.broadcast_to(index + jnp.arange(t)[None], (b, t))
            rope = rope_tables(positions, inv_freq, self.dtype, self.config.mrope_section)
        if cache is not None:
            new_valid = jnp.ones((b, t), bool) if attn_mask is None else attn_mask.astype(bool)
            cache = dataclasses.replace(cache, valid=jax.lax.dynamic_update_slice(cache.valid, new_valid, (0, index)))
        mask = attention_mask(t, attn_mask, cache)
        keys = self.dropout_keys()
        if self.scan_layers:
            x, new_layers = self.layers(x, rope, mask, None if cache is None else cache.layers, index, keys)
        else:
            new_layers = []
            for i, layer in enumerate(self.layers):
                key = None if keys is None else keys[i]
                x, layer_cache = layer(x, rope, mask, None if cache is None else cache.layers[i], index, key)
                new_layers.append(layer_cache)
        x = self.norm(x)
        if cache is not None:
            cache = dataclasses.replace(cache, layers=new_layers, index=index + t)
        return x, cache

    def dropout_keys(self) -> jax.Array | None:
        """One LoRA dropout key per decoder layer [L], split from the 'dropout' rng (training), or
        None. Layer i gets keys[i] scanned or unrolled, so both forms draw the same masks and a run
        may switch form on resume."""
        if self.lora is None or self.lora.dropout <= 0 or not self.has_rng("dropout"):
            return None
        return jax.random.split(self.make_rng("dropout"), self.config.num_hidden_layers)

    def logits(self, hidden) -> jax.Array:
        if self.config.tie_word_embeddings:
            w = self.embed_tokens.astype(self.dtype).T
            out = jnp.dot(hidden.astype(self.dtype), w)
        else:
            out = self.lm_head(hidden)
        return constrain(out, ("batch", "length", "act_vocab"))
