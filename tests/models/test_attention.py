"""Each attention implementation against jax.nn.dot_product_attention's XLA path, forward and
gradients: grouped KV heads, causal, and an explicit mask with a fully masked query row."""

import jax
import numpy as np
import pytest

from vlguard_jax.models.attention import attention


def _inputs():
    k = jax.random.split(jax.random.key(1), 5)
    q = jax.random.normal(k[0], (2, 5, 6, 8))
    kk = jax.random.normal(k[1], (2, 7, 2, 8))
    v = jax.random.normal(k[2], (2, 7, 2, 8))
    mask = jax.random.bernoulli(k[3], 0.7, (2, 1, 5, 7)).at[1, 0, 2].set(False)
    g = jax.random.normal(k[4], q.shape)
    return q, kk, v, mask, g


CASES = {
    "mask": lambda q, k, v, mask: dict(q=q, k=k, v=v, mask=mask),
    "causal": lambda q, k, v, mask: dict(q=q, k=k[:, :5], v=v[:, :5], is_causal=True),
    "causal+mask": lambda q, k, v, mask: dict(q=q, k=k[:, :5], v=v[:, :5], is_causal=True, mask=mask[..., :5]),
    "none": lambda q, k, v, mask: dict(q=q, k=k, v=v),
}


@pytest.mark.parametrize("impl", ["xla", "per_head", None])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_jax_reference(impl, case):
    q, k, v, mask, g = _inputs()
    kw = CASES[case](q, k, v, mask)
    args = (kw.pop("q"), kw.pop("k"), kw.pop("v"))
    ours = lambda q, k, v: attention(q, k, v, implementation=impl, **kw)
    ref = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla", **kw)
    np.testing.assert_allclose(jax.jit(ours)(*args), ref(*args), rtol=1e-5, atol=1e-6)
    got = jax.jit(jax.vjp(ours, *args)[1])(g)
    want = jax.vjp(ref, *args)[1](g)
    for name, a, b in zip("qkv", got, want):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"d{name}")


def test_unknown_implementation():
    q, k, v, _, _ = _inputs()
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
        attention(q, k, v, implementation="flash")


def test_cached_layout_matches_jax_reference():
    """`attention_cached` (keys and values [B, KV, S, D]) against the reference on the
    same keys and values in [B, S, KV, D]."""
    from vlguard_jax.models.attention import attention_cached

    q, k, v, mask, _ = _inputs()
    for m in (mask, None, mask[:1, :, 3:4]):  # batch mask, none, one query row broadcast
        qq = q if m is None or m.shape[2] == q.shape[1] else q[:, 3:4]
        ref = jax.nn.dot_product_attention(qq, k, v, mask=m, implementation="xla")
        got = jax.jit(attention_cached)(qq, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), m)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
