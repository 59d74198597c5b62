"""GPU-only checks (skipped elsewhere): cuDNN flash attention and bfloat16 on the accelerator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import tiny
from vlguard_jax import load_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not any(d.platform == "gpu" for d in jax.devices()), reason="needs a GPU"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    # head_dim 16 and hidden 64: shapes cuDNN accepts
    return tiny.build(tmp_path_factory.mktemp("gpu"), heads=4, kv_heads=2, dtype="bfloat16")


def test_cudnn_attention_matches_xla_in_bfloat16(built):
    ids, mask, pixels = tiny.batch(built.cfg, built.tok, lengths=(40, 33, 60))
    px = jnp.asarray(tiny.row_pixels(ids, built.cfg, pixels))
    outs = {}
    for impl in ("xla", "cudnn", "auto"):
        m = load_model(built.flax_dir, dtype=jnp.bfloat16, attn_impl=impl)
        fwd = jax.jit(lambda p, i, x, m=m: m.model.apply({"params": p}, i, x)[0])
        outs[impl] = np.asarray(fwd(m.params, jnp.asarray(ids), px), np.float32)
        if impl == "cudnn":
            hlo = fwd.lower(m.params, jnp.asarray(ids), px).compile().as_text()
            assert "cudnn" in hlo.lower()
    ref = tiny.torch_logits(built.model, ids, mask, pixels)
    for impl in ("cudnn", "auto"):
        assert tiny.rel_err(outs[impl], outs["xla"], mask) <= 2e-2, impl
        assert tiny.rel_err(outs[impl], ref, mask) <= 5e-2, impl


def test_float32_parity_on_gpu(built, tmp_path):
    from vlguard_jax.conversion.hf_to_flax import convert

    convert(built.hf_dir, tmp_path / "f32", "float32")
    ids, mask, pixels = tiny.batch(built.cfg, built.tok)
    m = load_model(tmp_path / "f32", dtype=jnp.float32)
    with jax.default_matmul_precision("highest"):
        ours, _ = m.model.apply(
            {"params": m.params}, jnp.asarray(ids), jnp.asarray(tiny.row_pixels(ids, built.cfg, pixels))
        )
    assert tiny.rel_err(ours, tiny.torch_logits(built.model, ids, mask, pixels), mask) <= 1e-4
