"""Building blocks shared by the vision tower and the decoder.

Every parameter carries logical axis names (see `vlguard_jax.sharding`). Parameters live in
`param_dtype`; matmuls run in `dtype`; norms always compute in float32.
"""

from __future__ import annotations

import functools
import math
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlguard_jax.errors import CheckpointError
from vlguard_jax.models.config import LoraSpec

Dtype = Any


LORA_PARAMS = ("lora_a", "lora_b")  # the names of a Dense layer's LoRA factors


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def lora_delta(h, a, b, scale: float) -> jax.Array:
    """scale * (h @ a) @ b, with a backward pass that flattens the token axes first, so each
    gradient is one plain 2-D matmul. Autodiff's form (a contraction over batch and length at
    once) is much slower on XLA's CPU backend for these thin rank-r factors."""
    return jnp.dot(jnp.dot(h, a), b) * scale


def _lora_fwd(h, a, b, scale):
    ha = jnp.dot(h, a)
    return jnp.dot(ha, b) * scale, (h, a, b, ha)


def _lora_bwd(scale, res, dy):
    h, a, b, ha = res
    n = math.prod(h.shape[:-1])
    h2, ha2, dy2 = h.reshape(n, -1), ha.reshape(n, -1), dy.reshape(n, -1)
    dha = jnp.dot(dy2, b.T) * scale
    return (
        jnp.dot(dha, a.T).reshape(h.shape).astype(h.dtype),
        jnp.dot(h2.T, dha).astype(a.dtype),
        (jnp.dot(ha2.T, dy2) * scale).astype(b.dtype),
    )


lora_delta.defvjp(_lora_fwd, _lora_bwd)


def param_with_axes(module: nn.Module, name: str, init, shape, dtype, axes) -> jax.Array:
    """A parameter with its logical axes: boxed in the variables, an array when the module reads it."""
    return cast(jax.Array, module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype))


class Dense(nn.Module):
    """y = x @ kernel (+ bias) (+ LoRA); kernel is [in, out] with logical `axes`. LoRA dropout
    runs only when a `dropout_key` is given (training): the caller derives it from the layer's
    key, so that scanned and unrolled layers draw the same masks."""

    features: int
    axes: tuple[str | None, str | None]
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    lora: LoraSpec | None = None

    @nn.compact
    def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        kernel = param_with_axes(
            self, "kernel", nn.initializers.normal(0.02), (x.shape[-1], self.features), self.param_dtype, self.axes
        )
        y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = param_with_axes(
                self, "bias", nn.initializers.zeros, (self.features,), self.param_dtype, (self.axes[1],)
            )
            y = y + bias.astype(self.dtype)
        if self.lora is not None:
            r = self.lora.rank
            # PEFT: kaiming_uniform(a=sqrt(5)) on A, i.e. U(-1/sqrt(in), 1/sqrt(in)).
            a = param_with_axes(
                self,
                "lora_a",
                nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                (x.shape[-1], r),
                jnp.float32,
                (self.axes[0], "lora_rank"),
            )
            b = param_with_axes(
                self, "lora_b", nn.initializers.zeros, (r, self.features), jnp.float32, ("lora_rank", self.axes[1])
            )
            h = x.astype(self.dtype)
            if self.lora.dropout > 0 and dropout_key is not None:
                keep = jax.random.bernoulli(dropout_key, 1 - self.lora.dropout, h.shape)
                h = jnp.where(keep, h / (1 - self.lora.dropout), 0).astype(self.dtype)
            delta: jax.Array = lora_delta(h, a.astype(self.dtype), b.astype(self.dtype), self.lora.scale)
            y = y + delta
        return y


class RMSNorm(nn.Module):
    """Llama RMSNorm, with Hugging Face's cast order (normalise in f32, cast, then scale)."""

    eps: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        weight = param_with_axes(self, "weight", nn.initializers.ones, (x.shape[-1],), self.param_dtype, ("norm",))
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = (x32 * jax.lax.rsqrt(var + self.eps)).astype(self.dtype)
        return weight.astype(self.dtype) * y


class LayerNorm(nn.Module):
    """LayerNorm computed in float32, result cast to `dtype`."""

    eps: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        weight = param_with_axes(self, "weight", nn.initializers.ones, (d,), self.param_dtype, ("norm",))
        bias = param_with_axes(self, "bias", nn.initializers.zeros, (d,), self.param_dtype, ("norm",))
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * weight.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


def patchify(pixel_values: jax.Array, image_size: int, num_channels: int, patch_size: int, dtype: Dtype) -> jax.Array:
    """pixel_values [B, C, H, W] (NCHW) -> [B, patches, C*p*p], flattened in (channel, row, col)
    order: the flattened order of torch's conv weight. A shape the tower was not built for is an
    error naming both."""
    b, ch, hgt, wid = pixel_values.shape
    if (hgt, wid) != (image_size, image_size) or ch != num_channels:
        raise CheckpointError(
            f"pixel_values shape {pixel_values.shape} does not match the tower ({num_channels}, {image_size}, {image_size})"
        )
    p, g = patch_size, image_size // patch_size
    x = pixel_values.astype(dtype).reshape(b, ch, g, p, g, p)
    return x.transpose(0, 2, 4, 1, 3, 5).reshape(b, g * g, ch * p * p)
