"""Qwen2.5-VL's vision tower (transformers' `Qwen2_5_VisionTransformerPretrainedModel`) at static
shapes: a batch of images, each its patches padded to one bucket, with masks.

An image of grid_h x grid_w patches (both even) comes as the processor makes it: patches
[N, channels * temporal_patch_size * patch^2] in 2x2-block order (each merged token's four patches
adjacent, blocks row-major), padded here to the bucket's N with zeros, and its grid (grid_h,
grid_w). Patch i is real when i < grid_h * grid_w.

transformers reorders the patches window by window, runs attention on each window's run
(`cu_window_seqlens`) and restores the order after the merger. Attention is the same whatever the
order of its keys, and the merger joins each block's four patches, which the reordering keeps
together; so here the patches stay in the processor's order and each block's attention is masked
to the patches of one window (full blocks: of one image). Padding attends only to padding.
Memory: each block's mask and scores are [heads, N, N] per image, so `max_pixels` (the largest
N is max_pixels / patch^2) bounds them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlguard_jax.models.attention import attention
from vlguard_jax.models.layers import Dense, Dtype, RMSNorm


@dataclasses.dataclass(frozen=True)
class QwenVisionConfig:
    """transformers' `Qwen2_5_VLVisionConfig` (Qwen2.5-VL-7B's values as defaults)."""

    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112  # pixels
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    out_hidden_size: int = 3584
    hidden_act: str = "silu"
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def merge_unit(self) -> int:
        return self.spatial_merge_size**2

    @property
    def window_tokens(self) -> int:
        """A window's side in merged tokens (112 px / 2 / 14 = 4)."""
        return self.window_size // self.spatial_merge_size // self.patch_size

    @classmethod
    def from_dict(cls, d: dict) -> QwenVisionConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        d = dict(d, fullatt_block_indexes=tuple(d.get("fullatt_block_indexes", cls.fullatt_block_indexes)))
        return cls(**{k: v for k, v in d.items() if k in fields})

    def forward_flops(self, patches: int) -> float:
        """Forward FLOPs of the tower (not the merger) on `patches` patch slots: its matmuls, and
        attention over all the slots (masked, so computed whole)."""
        d, m, n = self.hidden_size, self.intermediate_size, patches
        per_block = 2 * n * (4 * d * d + 3 * d * m) + 4 * n * n * d
        return 2 * n * self.patch_dim * d + self.depth * per_block


def patch_layout(c: QwenVisionConfig, grid: jax.Array, n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(row, col, real) [B, N] of each patch slot: the processor's 2x2-block order over a grid
    [B, 2] of (grid_h, grid_w); slots past grid_h * grid_w are not real."""
    m = c.spatial_merge_size
    i = jnp.arange(n)[None]
    gh, gw = grid[:, :1], grid[:, 1:]
    blocks_w = jnp.maximum(gw // m, 1)
    block, within = i // c.merge_unit, i % c.merge_unit
    row = (block // blocks_w) * m + within // m
    col = (block % blocks_w) * m + within % m
    return row, col, i < gh * gw


def vision_rope(c: QwenVisionConfig, row: jax.Array, col: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(cos, sin) [B, N, head_dim] in float32: the rotary angles of (row, col), each over a quarter
    of the head's dimensions, repeated for the rotated half (`Qwen2_5_VLVisionRotaryEmbedding`)."""
    quarter = c.head_dim // 2
    inv = 1.0 / (np.float32(c.rope_theta) ** (np.arange(0, quarter, 2, dtype=np.float32) / quarter))
    inv = jnp.asarray(inv.astype(np.float32))
    freqs = jnp.concatenate([row[..., None].astype(jnp.float32) * inv, col[..., None].astype(jnp.float32) * inv], -1)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def group_masks(c: QwenVisionConfig, row, col, real) -> tuple[jax.Array, jax.Array]:
    """Boolean [B, 1, N, N] masks: (window attention, full attention). A real patch attends to
    the real patches of its window (of its image); padding to padding."""
    w = c.window_tokens * c.spatial_merge_size  # a window's side in patches
    n = row.shape[1]
    window = jnp.where(real, (row // w) * n + col // w, -1)
    whole = jnp.where(real, 0, -1)
    same = lambda g: (g[:, :, None] == g[:, None, :])[:, None]  # noqa: E731
    return same(window), same(whole)


def _rotate(x, cos, sin) -> jax.Array:
    """transformers' `apply_rotary_pos_emb_vision`: in float32, back to x's dtype."""
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos[:, :, None] + rotated * sin[:, :, None]).astype(x.dtype)


class VisionBlock(nn.Module):
    config: QwenVisionConfig
    dtype: Dtype
    param_dtype: Dtype
    attn_impl: str | None = None

    @nn.compact
    def __call__(self, x, rope, mask):
        c = self.config
        b, n, d = x.shape
        kw: dict[str, Any] = dict(use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype)
        norm: dict[str, Any] = dict(eps=1e-6, dtype=self.dtype, param_dtype=self.param_dtype)
        h = RMSNorm(name="norm1", **norm)(x)
        qkv = Dense(3 * d, ("vision_embed", "vision_heads"), name="qkv", **kw)(h).reshape(b, n, 3, c.num_heads, -1)
        q, k, v = (qkv[:, :, i] for i in range(3))
        q, k = _rotate(q, *rope), _rotate(k, *rope)
        o = attention(q, k, v, mask=mask, implementation=self.attn_impl).reshape(b, n, d)
        x = x + Dense(d, ("vision_heads", "vision_embed"), name="proj", **kw)(o)
        h = RMSNorm(name="norm2", **norm)(x)
        gate = Dense(c.intermediate_size, ("vision_embed", "vision_mlp"), name="gate_proj", **kw)(h)
        up = Dense(c.intermediate_size, ("vision_embed", "vision_mlp"), name="up_proj", **kw)(h)
        down = Dense(d, ("vision_mlp", "vision_embed"), name="down_proj", **kw)
        return x + down(jax.nn.silu(gate) * up)


class PatchMerger(nn.Module):
    """`Qwen2_5_VLPatchMerger`: RMSNorm, each block's four patches joined, Linear, GELU, Linear."""

    config: QwenVisionConfig
    dtype: Dtype
    param_dtype: Dtype

    @nn.compact
    def __call__(self, x):
        c = self.config
        b, n, d = x.shape
        kw: dict[str, Any] = dict(use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype)
        x = RMSNorm(eps=1e-6, name="ln_q", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        x = x.reshape(b, n // c.merge_unit, d * c.merge_unit)
        x = Dense(d * c.merge_unit, ("vision_embed", "mlp"), name="fc1", **kw)(x)
        x = jax.nn.gelu(x, approximate=False)
        return Dense(c.out_hidden_size, ("mlp", "embed"), name="fc2", **kw)(x)


class QwenVisionTower(nn.Module):
    """patches [B, N, patch_dim] and grid [B, 2] -> the last block's states [B, N, hidden], in
    the processor's patch order (`PatchMerger` then joins each block of four)."""

    config: QwenVisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attn_impl: str | None = None

    @nn.compact
    def __call__(self, patches, grid):
        c = self.config
        n = patches.shape[1]
        if n % c.merge_unit:
            raise ValueError(f"{n} patch slots do not split into blocks of {c.merge_unit}")  # a bug: buckets are
        kw: dict[str, Any] = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Dense(c.hidden_size, ("vision_patch", "vision_embed"), name="patch_embed", **kw)(patches.astype(self.dtype))
        row, col, real = patch_layout(c, grid, n)
        rope = vision_rope(c, row, col)
        window, whole = group_masks(c, row, col, real)
        for i in range(c.depth):
            mask = whole if i in c.fullatt_block_indexes else window
            x = VisionBlock(c, attn_impl=self.attn_impl, name=f"blocks_{i}", **kw)(x, rope, mask)
        return x
