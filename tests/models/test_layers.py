"""The LoRA branch's hand-written backward pass against autodiff of the plain formula."""

import jax
import jax.numpy as jnp
import numpy as np

from vlguard_jax.models.layers import lora_delta


def test_lora_delta_gradients_match_autodiff():
    k = jax.random.split(jax.random.key(0), 4)
    h = jax.random.normal(k[0], (3, 7, 24))
    a = jax.random.normal(k[1], (24, 4))
    b = jax.random.normal(k[2], (4, 40))
    g = jax.random.normal(k[3], (3, 7, 40))
    plain = lambda h, a, b: jnp.sum(jnp.dot(jnp.dot(h, a), b) * 2.5 * g)
    ours = lambda h, a, b: jnp.sum(lora_delta(h, a, b, 2.5) * g)
    np.testing.assert_allclose(ours(h, a, b), plain(h, a, b), rtol=1e-6)
    for got, want in zip(jax.grad(ours, (0, 1, 2))(h, a, b), jax.grad(plain, (0, 1, 2))(h, a, b)):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))
    # bfloat16 compute: gradients come back in each input's dtype
    grads = jax.grad(lambda h, a, b: jnp.sum(lora_delta(h, a, b, 2.5).astype(jnp.float32) * g), (0, 1, 2))(
        h.astype(jnp.bfloat16), a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    )
    assert all(x.dtype == jnp.bfloat16 for x in grads)
