"""Multi-head attention over [batch, length, heads, head_dim], with three interchangeable
implementations of one arithmetic (float32 logits and softmax, a large negative for masked slots,
as `jax.nn.dot_product_attention`'s XLA path):

- "cudnn": cuDNN flash attention through `jax.nn.dot_product_attention` (GPU, bf16/f16, no mask);
- "xla": heads moved in front of the lengths, one batched matmul for all heads (accelerators);
- "per_head": one head at a time on [B, T, D] slices, with its own backward pass (faster than
  "xla" on XLA's CPU backend; the figures are in BENCHMARKS.md).

"auto" (the default) picks cuDNN where it applies, else "per_head" on the CPU and "xla" elsewhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vlguard_jax.errors import ConfigError

NEG = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention(q, k, v, *, mask=None, is_causal=False, implementation=None) -> jax.Array:
    """q [B, T, H, D], k and v [B, S, KV, D] (GQA when KV < H) -> [B, T, H, D].
    `mask`: boolean, broadcastable to [B, 1, T, S]. `implementation`: see the module doc; None
    means "auto"."""
    if implementation in (None, "auto"):
        ok = (
            jax.default_backend() == "gpu"
            and q.dtype in (jnp.bfloat16, jnp.float16)
            and q.shape[-1] % 8 == 0
            and q.shape[-1] <= 128
            and mask is None
        )
        implementation = "cudnn" if ok else ("per_head" if jax.default_backend() == "cpu" else "xla")
    if implementation == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal, implementation="cudnn")
    allowed = _allowed(q.shape[0], q.shape[1], k.shape[1], mask, is_causal)
    if implementation == "per_head":
        return _per_head(q, k, v, allowed)
    if implementation == "xla":
        return _heads_major(q, k, v, allowed)
    raise ConfigError(f"unknown attention implementation {implementation!r}")


def attention_cached(q, k, v, mask) -> jax.Array:
    """Attention over a KV cache kept heads-major: q [B, T, H, D], keys and values [B, KV, S, D],
    boolean `mask` broadcastable to [B, 1, T, S]. The same arithmetic as `attention`. Keys stay
    heads-major rather than transposed: decode is faster so on a GPU (BENCHMARKS.md)."""
    return _grouped(q, k, v, _allowed(q.shape[0], q.shape[1], k.shape[2], mask, False))


def _allowed(b, t, s, mask, is_causal):
    """Boolean [B or 1, T, S] of the slots each query may read, or None for all."""
    allowed = None
    if is_causal:
        allowed = jnp.tril(jnp.ones((t, s), bool))[None]
    if mask is not None:
        m = jnp.broadcast_to(mask, (b, 1, t, s))[:, 0]
        allowed = m if allowed is None else allowed & m
    return allowed


def _heads_major(q, k, v, allowed):
    return _grouped(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), allowed)


def _grouped(q, k, v, allowed):
    """All heads in one batched matmul, heads in front: q [B, T, H, D], k and v [B, KV, S, D],
    `allowed` from `_allowed`."""
    b, t, h, d = q.shape
    kv = k.shape[1]
    qh = q.reshape(b, t, kv, h // kv, d).transpose(0, 2, 3, 1, 4)  # [B, KV, G, T, D]
    logits = jnp.einsum("bkgtd,bksd->bkgts", qh, k, preferred_element_type=jnp.float32)
    logits = logits * jnp.float32(d**-0.5)
    if allowed is not None:
        logits = jnp.where(allowed[:, None, None], logits, jnp.float32(NEG))
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bksd->bkgtd", probs, v)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


def _probs(qh, kh, allowed):
    """Softmax probabilities (float32) of one head: qh [B, T, D], kh [B, S, D] -> [B, T, S]."""
    logits = jnp.einsum("btd,bsd->bts", qh, kh, preferred_element_type=jnp.float32)
    logits = logits * jnp.float32(qh.shape[-1] ** -0.5)
    if allowed is not None:
        logits = jnp.where(allowed, logits, jnp.float32(NEG))
    return jax.nn.softmax(logits, axis=-1)


def _group(i, h, kv):
    return i // (h // kv)


@jax.custom_vjp
def _per_head(q, k, v, allowed):
    return _per_head_fwd(q, k, v, allowed)[0]


def _per_head_fwd(q, k, v, allowed):
    h, kv = q.shape[2], k.shape[2]
    outs = []
    for i in range(h):
        j = _group(i, h, kv)
        p = _probs(q[:, :, i], k[:, :, j], allowed)
        outs.append(jnp.einsum("bts,bsd->btd", p.astype(v.dtype), v[:, :, j]))
    o = jnp.stack(outs, axis=2)
    return o, (q, k, v, allowed, o)


def _per_head_bwd(res, do):
    """Softmax backward per head, probabilities recomputed (as flash attention does) rather than
    kept: dS = P * (dO V^T - rowsum(dO * O)). Autodiff's form pads each head's gradient back to
    full size and sums, and transposes operands that XLA's CPU matmuls do not take as they are."""
    q, k, v, allowed, o = res
    h, kv = q.shape[2], k.shape[2]
    scale = jnp.float32(q.shape[-1] ** -0.5)
    if allowed is not None:  # a fully masked query row had constant logits: no gradient from it
        scale = scale * jnp.any(allowed, axis=-1, keepdims=True)
    dq, dk, dv = [], [None] * kv, [None] * kv
    for i in range(h):
        j = _group(i, h, kv)
        p = _probs(q[:, :, i], k[:, :, j], allowed)
        doh = do[:, :, i]
        dvh = jnp.einsum("bts,btd->bsd", p.astype(v.dtype), doh)
        dp = jnp.einsum("btd,bsd->bts", doh, v[:, :, j], preferred_element_type=jnp.float32)
        delta = jnp.sum(doh.astype(jnp.float32) * o[:, :, i].astype(jnp.float32), -1, keepdims=True)
        ds = (p * (dp - delta) * scale).astype(q.dtype)  # p is 0 in masked slots of other rows
        dq.append(jnp.einsum("bts,bsd->btd", ds, k[:, :, j]))
        dkh = jnp.einsum("bts,btd->bsd", ds, q[:, :, i])
        dk[j] = dkh if dk[j] is None else dk[j] + dkh
        dv[j] = dvh if dv[j] is None else dv[j] + dvh
    return jnp.stack(dq, axis=2), jnp.stack(dk, axis=2), jnp.stack(dv, axis=2), None


_per_head.defvjp(_per_head_fwd, _per_head_bwd)
