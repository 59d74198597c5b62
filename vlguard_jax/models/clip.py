"""The CLIP ViT vision tower (Hugging Face `CLIPVisionModel` semantics).

Only the layers up to LLaVA's selected hidden state run: with `vision_feature_layer=-2` the last
encoder layer is never computed, exactly as its output is never used.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlguard_jax.models.attention import attention
from vlguard_jax.models.config import VisionConfig
from vlguard_jax.models.layers import Dense, Dtype, LayerNorm, param_with_axes, patchify
from vlguard_jax.sharding import constrain

ACT = ("batch", "length", "act_embed")


def quick_gelu(x) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


class CLIPAttention(nn.Module):
    config: VisionConfig
    dtype: Dtype
    param_dtype: Dtype
    attn_impl: str | None = None

    @nn.compact
    def __call__(self, x):
        c = self.config
        b, t, _ = x.shape
        kw: dict[str, Any] = dict(use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype)
        proj = lambda name: Dense(c.hidden_size, ("vision_embed", "vision_heads"), name=name, **kw)(x)
        q, k, v = (proj(n).reshape(b, t, c.num_attention_heads, c.head_dim) for n in ("q_proj", "k_proj", "v_proj"))
        q, k, v = (constrain(a, ("batch", "length", "act_heads", None)) for a in (q, k, v))
        o = attention(q, k, v, implementation=self.attn_impl).reshape(b, t, c.hidden_size)
        return Dense(c.hidden_size, ("vision_heads", "vision_embed"), name="out_proj", **kw)(o)


class CLIPEncoderLayer(nn.Module):
    config: VisionConfig
    dtype: Dtype
    param_dtype: Dtype
    attn_impl: str | None = None

    @nn.compact
    def __call__(self, x):
        c = self.config
        kw: dict[str, Any] = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = LayerNorm(c.layer_norm_eps, name="layer_norm1", **kw)(x)
        x = x + CLIPAttention(c, attn_impl=self.attn_impl, name="self_attn", **kw)(h)
        h = LayerNorm(c.layer_norm_eps, name="layer_norm2", **kw)(x)
        h = Dense(c.intermediate_size, ("vision_embed", "vision_mlp"), use_bias=True, name="fc1", **kw)(h)
        h = constrain(quick_gelu(h), ("batch", "length", "act_mlp"))
        h = Dense(c.hidden_size, ("vision_mlp", "vision_embed"), use_bias=True, name="fc2", **kw)(h)
        return constrain(x + h, ACT)


class CLIPVisionTower(nn.Module):
    """pixel_values [B, C, H, W] (NCHW, as Hugging Face) -> hidden state after `num_layers` layers.

    `num_layers=0` returns the embeddings after the pre-layernorm, i.e. Hugging Face's
    `hidden_states[0]`; `num_layers=k` returns `hidden_states[k]`.
    """

    config: VisionConfig
    num_layers: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attn_impl: str | None = None

    @nn.compact
    def __call__(self, pixel_values):
        c = self.config
        kw: dict[str, Any] = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b = pixel_values.shape[0]
        x = patchify(pixel_values, c.image_size, c.num_channels, c.patch_size, self.dtype)
        patches = Dense(c.hidden_size, ("vision_patch", "vision_embed"), name="patch_embedding", **kw)(x)
        cls = param_with_axes(
            self, "class_embedding", nn.initializers.normal(0.02), (c.hidden_size,), self.param_dtype, ("vision_embed",)
        )
        pos = param_with_axes(
            self,
            "position_embedding",
            nn.initializers.normal(0.02),
            (c.num_patches + 1, c.hidden_size),
            self.param_dtype,
            ("vision_positions", "vision_embed"),
        )
        cls = jnp.broadcast_to(cls.astype(self.dtype), (b, 1, c.hidden_size))
        x = jnp.concatenate([cls, patches], axis=1) + pos.astype(self.dtype)[None]
        x = constrain(LayerNorm(c.layer_norm_eps, name="pre_layrnorm", **kw)(x), ACT)
        for i in range(c.num_hidden_layers):
            if i < self.num_layers:
                x = CLIPEncoderLayer(c, attn_impl=self.attn_impl, name=f"layers_{i}", **kw)(x)
            elif self.is_initializing():  # unused layers still get parameters (for conversion)
                CLIPEncoderLayer(c, name=f"layers_{i}", **kw)(x)
        if self.is_initializing():
            LayerNorm(c.layer_norm_eps, name="post_layernorm", **kw)(x[:, 0])
        return x
