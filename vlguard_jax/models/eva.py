"""The EVA-CLIP ViT-g/14 vision tower (EVA-01) as MiniGPT-v2 runs it (Vision-CAIR/MiniGPT-4,
`minigpt4/models/eva_vit.py`).

Pre-norm blocks: LayerNorm (eps 1e-6), attention with one fused qkv weight whose bias is
`cat(q_bias, 0, v_bias)`, LayerNorm, MLP with exact GELU; learned absolute position embeddings
plus a CLS token; no layer scale, no rotary embeddings, no final norm. MiniGPT-v2 builds 39 of
the checkpoint's 40 blocks, so the output is the penultimate block's.

`resize_positions` is the load-time resize of the position grid (16x16 at 224 px to 32x32 at
448 px) with PyTorch's bicubic kernel (`F.interpolate(mode="bicubic", align_corners=False)`, no
antialiasing): a=-0.75, source index (i + 0.5) * in/out - 0.5, neighbours clamped at the edges.
`jax.image.resize("cubic")` uses another kernel (a=-0.5) and differs by up to 8%.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlguard_jax.errors import CheckpointError
from vlguard_jax.models.attention import attention
from vlguard_jax.models.layers import Dense, Dtype, LayerNorm, param_with_axes, patchify
from vlguard_jax.sharding import constrain

ACT = ("batch", "length", "act_embed")
HEAD_DIM = 88  # ViT-g's head size: heads default to width / 88
CUBIC_A = -0.75  # PyTorch's bicubic coefficient


@dataclasses.dataclass(frozen=True)
class EvaConfig:
    hidden_size: int = 1408
    intermediate_size: int = 6144  # int(1408 * 4.3637)
    num_hidden_layers: int = 39  # blocks built; eva_vit_g.pth holds 40, the last unused
    num_attention_heads: int = 16
    image_size: int = 448
    patch_size: int = 14
    num_channels: int = 3
    layer_norm_eps: float = 1e-6

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def forward_flops(self) -> float:
        """Model FLOPs of one image through the tower (2 per multiply-add)."""
        n, d, m = self.num_patches + 1, self.hidden_size, self.intermediate_size
        per_block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * m
        patch = 2 * self.num_patches * (self.num_channels * self.patch_size**2) * d
        return float(self.num_hidden_layers * per_block + patch)


def _cubic(t: float) -> float:
    """The cubic convolution kernel at distance |t| (Keys, a = CUBIC_A), as PyTorch writes it."""
    t, a = abs(t), CUBIC_A
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of PyTorch's 1-D bicubic resize (align_corners=False)."""
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        x0 = math.floor(src)
        for j in range(x0 - 1, x0 + 3):
            w[i, min(max(j, 0), n_in - 1)] += _cubic(src - j)
    return w


def resize_positions(pos: np.ndarray, grid: int) -> np.ndarray:
    """[1 + g*g, D] position embeddings (CLS first) -> [1 + grid*grid, D], the CLS entry kept."""
    n, d = pos.shape
    g = math.isqrt(n - 1)
    if g * g != n - 1:
        raise CheckpointError(f"pos_embed: {n - 1} patch positions are not a square grid")
    if g == grid:
        return pos
    m = bicubic_matrix(g, grid)
    patches = pos[1:].astype(np.float64).reshape(g, g, d)
    out = np.einsum("ik,jl,kld->ijd", m, m, patches).reshape(grid * grid, d)
    return np.concatenate([pos[:1].astype(np.float64), out]).astype(np.float32)


class EvaAttention(nn.Module):
    config: EvaConfig
    dtype: Dtype
    param_dtype: Dtype
    attn_impl: str | None = None

    @nn.compact
    def __call__(self, x):
        c = self.config
        b, t, _ = x.shape
        width = c.num_attention_heads * c.head_dim
        kw: dict[str, Any] = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        qkv = Dense(3 * width, ("vision_embed", "vision_heads"), name="qkv", **kw)(x)
        bias = [
            param_with_axes(self, n, nn.initializers.zeros, (width,), self.param_dtype, ("vision_heads",))
            for n in ("q_bias", "v_bias")
        ]
        qkv = qkv + jnp.concatenate([bias[0], jnp.zeros_like(bias[0]), bias[1]]).astype(self.dtype)
        q, k, v = (
            constrain(a.reshape(b, t, c.num_attention_heads, c.head_dim), ("batch", "length", "act_heads", None))
            for a in jnp.split(qkv, 3, axis=-1)
        )
        o = attention(q, k, v, implementation=self.attn_impl).reshape(b, t, width)
        return Dense(c.hidden_size, ("vision_heads", "vision_embed"), use_bias=True, name="proj", **kw)(o)


class EvaBlock(nn.Module):
    config: EvaConfig
    dtype: Dtype
    param_dtype: Dtype
    attn_impl: str | None = None

    @nn.compact
    def __call__(self, x):
        c = self.config
        kw: dict[str, Any] = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = LayerNorm(c.layer_norm_eps, name="norm1", **kw)(x)
        x = x + EvaAttention(c, attn_impl=self.attn_impl, name="attn", **kw)(h)
        h = LayerNorm(c.layer_norm_eps, name="norm2", **kw)(x)
        h = Dense(c.intermediate_size, ("vision_embed", "vision_mlp"), use_bias=True, name="fc1", **kw)(h)
        h = constrain(jax.nn.gelu(h, approximate=False), ("batch", "length", "act_mlp"))
        h = Dense(c.hidden_size, ("vision_mlp", "vision_embed"), use_bias=True, name="fc2", **kw)(h)
        return constrain(x + h, ACT)


class EvaVisionTower(nn.Module):
    """pixel_values [B, C, H, W] (NCHW) -> [B, 1 + patches, width], CLS first, after every block."""

    config: EvaConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attn_impl: str | None = None

    @nn.compact
    def __call__(self, pixel_values):
        c = self.config
        kw: dict[str, Any] = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b = pixel_values.shape[0]
        x = patchify(pixel_values, c.image_size, c.num_channels, c.patch_size, self.dtype)
        x = Dense(c.hidden_size, ("vision_patch", "vision_embed"), use_bias=True, name="patch_embed", **kw)(x)
        normal = nn.initializers.normal(0.02)
        cls = param_with_axes(self, "cls_token", normal, (c.hidden_size,), self.param_dtype, ("vision_embed",))
        pos = param_with_axes(
            self,
            "pos_embed",
            normal,
            (c.num_patches + 1, c.hidden_size),
            self.param_dtype,
            ("vision_positions", "vision_embed"),
        )
        cls = jnp.broadcast_to(cls.astype(self.dtype), (b, 1, c.hidden_size))
        x = constrain(jnp.concatenate([cls, x], axis=1) + pos.astype(self.dtype)[None], ACT)
        for i in range(c.num_hidden_layers):
            x = EvaBlock(c, attn_impl=self.attn_impl, name=f"blocks_{i}", **kw)(x)
        return x
