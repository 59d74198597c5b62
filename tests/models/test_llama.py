"""The Llama decoder: one layer alone, left padding with positions, and the KV cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests import tiny
from vlguard_jax import load_model
from vlguard_jax.models.llama import (
    LlamaDecoderLayer,
    init_cache,
    rope_inv_freq,
    rope_tables,
    stack_layers,
    unstack_layers,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny.build(tmp_path_factory.mktemp("llama"), heads=4, kv_heads=2)


def test_one_decoder_layer(built):
    m = load_model(built.flax_dir, dtype=jnp.float32)
    x = np.random.default_rng(0).normal(size=(2, 10, m.config.text.hidden_size)).astype(np.float32)
    with torch.no_grad():
        out = built.model.model.language_model(inputs_embeds=torch.tensor(x), output_hidden_states=True)
    ref = out.hidden_states[1].numpy()
    layer = LlamaDecoderLayer(m.config.text, dtype=jnp.float32, param_dtype=jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(10)[None], (2, 10))
    rope = rope_tables(positions, rope_inv_freq(m.config.text), jnp.float32)
    ours, _ = layer.apply({"params": m.params["language_model"]["layers_0"]}, jnp.asarray(x), rope, None, None, 0)
    assert np.abs(np.asarray(ours) - ref).max() <= 1e-4 * np.abs(ref).max()


def _left_padded(built):
    ids, mask, pixels = tiny.batch(built.cfg, built.tok, rows=("image", "text"), lengths=(5, 14))
    # move each row's padding to the left, as the generator lays prompts out
    left_ids, left_mask = np.zeros_like(ids), np.zeros_like(mask)
    for i in range(len(ids)):
        n = mask[i].sum()
        left_ids[i, -n:], left_mask[i, -n:] = ids[i, :n], 1
    positions = np.clip(np.cumsum(left_mask, axis=1) - 1, 0, None)
    return left_ids, left_mask, positions, pixels


def test_left_padding_with_positions_matches_transformers(built):
    ids, mask, positions, pixels = _left_padded(built)
    with torch.no_grad():
        ref = built.model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(positions),
            pixel_values=torch.tensor(pixels),
        ).logits.numpy()
    m = load_model(built.flax_dir, dtype=jnp.float32)
    ours, _ = m.model.apply(
        {"params": m.params},
        jnp.asarray(ids),
        jnp.asarray(tiny.row_pixels(ids, built.cfg, pixels)),
        attention_mask=jnp.asarray(mask),
        positions=jnp.asarray(positions),
    )
    assert tiny.rel_err(ours, ref, mask) <= 1e-4


def test_cache_prefill_then_decode_equals_full_forward(built):
    ids, mask, positions, pixels = _left_padded(built)
    m = load_model(built.flax_dir, dtype=jnp.float32)
    apply = jax.jit(lambda *a, **k: m.model.apply({"params": m.params}, *a, **k))
    px = jnp.asarray(tiny.row_pixels(ids, built.cfg, pixels))
    full, none = apply(jnp.asarray(ids), px, attention_mask=jnp.asarray(mask), positions=jnp.asarray(positions))
    assert none is None
    split = ids.shape[1] - 4
    cache = init_cache(m.config.text, len(ids), ids.shape[1] + 2, jnp.float32)
    pre, cache = apply(
        jnp.asarray(ids[:, :split]),
        px,
        attention_mask=jnp.asarray(mask[:, :split]),
        positions=jnp.asarray(positions[:, :split]),
        cache=cache,
    )
    steps = [pre]
    for t in range(split, ids.shape[1]):
        out, cache = apply(
            jnp.asarray(ids[:, t : t + 1]),
            None,
            attention_mask=jnp.asarray(mask[:, t : t + 1]),
            positions=jnp.asarray(positions[:, t : t + 1]),
            cache=cache,
        )
        steps.append(out)
    assert int(cache.index) == ids.shape[1]
    incremental = np.concatenate([np.asarray(s) for s in steps], axis=1)
    assert tiny.rel_err(incremental, np.asarray(full), mask) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_policies_keep_logits_and_gradients(built, policy):
    ids, mask, pixels = tiny.batch(built.cfg, built.tok)
    px = jnp.asarray(tiny.row_pixels(ids, built.cfg, pixels))
    plain = load_model(built.flax_dir, dtype=jnp.float32)
    remat = load_model(built.flax_dir, dtype=jnp.float32, remat_policy=policy)

    def loss(model, params):
        logits, _ = model.apply({"params": params}, jnp.asarray(ids), px)
        return jnp.sum(jnp.where(jnp.asarray(mask)[..., None] > 0, logits, 0.0) ** 2)

    (a, ga), (b, gb) = (jax.value_and_grad(lambda p, m=m: loss(m.model, p))(m.params) for m in (plain, remat))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), ga, gb)


def _scanned(m):
    """The same model with `scan_layers`, and its parameters stacked."""
    params = dict(m.params, language_model=stack_layers(m.params["language_model"], m.config.text.num_hidden_layers))
    return m.model.clone(scan_layers=True), params


def test_scanned_layers_keep_logits_and_gradients(built):
    """Scanned under the training default, dots remat, against the unrolled model without remat."""
    ids, mask, pixels = tiny.batch(built.cfg, built.tok)
    px = jnp.asarray(tiny.row_pixels(ids, built.cfg, pixels))
    m = load_model(built.flax_dir, dtype=jnp.float32)
    scanned, stacked = _scanned(m)
    scanned = scanned.clone(remat_policy="dots")
    assert stacked["language_model"]["layers"]["mlp"]["up_proj"]["kernel"].shape[0] == 3
    assert unstack_layers(stacked["language_model"]).keys() == m.params["language_model"].keys()

    def loss(model, params):
        logits, _ = model.apply({"params": params}, jnp.asarray(ids), px)
        return jnp.sum(jnp.where(jnp.asarray(mask)[..., None] > 0, logits, 0.0) ** 2), logits

    grad = lambda model, p: jax.jit(jax.value_and_grad(lambda p: loss(model, p), has_aux=True))(p)
    ((a, la), ga), ((b, lb), gb) = grad(m.model, m.params), grad(scanned, stacked)
    assert tiny.rel_err(lb, la, mask) <= 1e-5
    np.testing.assert_allclose(a, b, rtol=1e-5)
    gb = dict(gb, language_model=unstack_layers(gb["language_model"]))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5 * np.abs(x).max()), ga, gb)


def test_scanned_layers_decode_from_a_stacked_cache(built):
    ids, mask, positions, pixels = _left_padded(built)
    m = load_model(built.flax_dir, dtype=jnp.float32)
    scanned, stacked = _scanned(m)
    px = jnp.asarray(tiny.row_pixels(ids, built.cfg, pixels))
    full, _ = m.model.apply(
        {"params": m.params}, jnp.asarray(ids), px, attention_mask=jnp.asarray(mask), positions=jnp.asarray(positions)
    )
    apply = jax.jit(lambda *a, **k: scanned.apply({"params": stacked}, *a, **k))
    split = ids.shape[1] - 3
    cache = init_cache(m.config.text, len(ids), ids.shape[1], jnp.float32, stacked=True)
    out, cache = apply(
        jnp.asarray(ids[:, :split]),
        px,
        attention_mask=jnp.asarray(mask[:, :split]),
        positions=jnp.asarray(positions[:, :split]),
        cache=cache,
    )
    steps = [out]
    for t in range(split, ids.shape[1]):
        out, cache = apply(
            jnp.asarray(ids[:, t : t + 1]),
            None,
            attention_mask=jnp.asarray(mask[:, t : t + 1]),
            positions=jnp.asarray(positions[:, t : t + 1]),
            cache=cache,
        )
        steps.append(out)
    assert cache.layers[0].shape[0] == m.config.text.num_hidden_layers
    assert tiny.rel_err(np.concatenate([np.asarray(s) for s in steps], axis=1), np.asarray(full), mask) <= 1e-5


@pytest.mark.slow
def test_scanned_layers_carry_lora_factors(built):
    """LoRA factors are stacked with their layers; nonzero B so that they count."""
    from flax import traverse_util

    from vlguard_jax.models import init_params
    from vlguard_jax.models.config import LoraSpec

    ids, mask, pixels = tiny.batch(built.cfg, built.tok)
    px = jnp.asarray(tiny.row_pixels(ids, built.cfg, pixels))
    m = load_model(built.flax_dir, dtype=jnp.float32)
    model = m.model.clone(lora=LoraSpec(4, 8.0))
    flat = traverse_util.flatten_dict(init_params(model, jax.random.key(1)))
    rng = np.random.default_rng(0)
    flat = {
        k: (jnp.asarray(rng.normal(size=v.shape) * 0.1, v.dtype) if k[-1] == "lora_b" else v) for k, v in flat.items()
    }
    params = traverse_util.unflatten_dict(flat)
    scanned = model.clone(scan_layers=True)
    stacked = dict(params, language_model=stack_layers(params["language_model"], 3))
    loss = lambda mod, p: jnp.sum(
        jnp.where(jnp.asarray(mask)[..., None] > 0, mod.apply({"params": p}, jnp.asarray(ids), px)[0], 0.0) ** 2
    )
    a, ga = jax.value_and_grad(lambda p: loss(model, p))(params)
    b, gb = jax.value_and_grad(lambda p: loss(scanned, p))(stacked)
    np.testing.assert_allclose(b, a, rtol=1e-5)
    ga, gb = (
        ga["language_model"]["layers_1"]["mlp"]["down_proj"],
        unstack_layers(gb["language_model"])["layers_1"]["mlp"]["down_proj"],
    )
    for k in ("lora_a", "lora_b"):
        np.testing.assert_allclose(gb[k], ga[k], rtol=1e-5, atol=1e-5 * np.abs(ga[k]).max())


def test_lora_dropout_draws_the_same_masks_scanned_and_unrolled(built):
    """Each layer's dropout key is split from the one 'dropout' rng whatever the form, so a run
    may switch `scan_layers` on resume with the paper's dropout (0.05) on; the masks are real
    (another key gives other logits)."""
    from flax import traverse_util

    from vlguard_jax.models import init_params
    from vlguard_jax.models.config import LoraSpec

    ids, mask, pixels = tiny.batch(built.cfg, built.tok)
    px = jnp.asarray(tiny.row_pixels(ids, built.cfg, pixels))
    m = load_model(built.flax_dir, dtype=jnp.float32)
    model = m.model.clone(lora=LoraSpec(4, 8.0, 0.3))
    flat = traverse_util.flatten_dict(init_params(model, jax.random.key(1)))
    rng = np.random.default_rng(0)
    flat = {k: (jnp.asarray(rng.normal(size=v.shape), v.dtype) if k[-1] == "lora_b" else v) for k, v in flat.items()}
    params = traverse_util.unflatten_dict(flat)
    scanned = model.clone(scan_layers=True)
    stacked = dict(params, language_model=stack_layers(params["language_model"], 3))
    run = lambda mod, p, key: mod.apply({"params": p}, jnp.asarray(ids), px, rngs={"dropout": key})[0]
    a, b = run(model, params, jax.random.key(7)), run(scanned, stacked, jax.random.key(7))
    assert tiny.rel_err(np.asarray(b), np.asarray(a), mask) <= 1e-5
    plain = model.apply({"params": params}, jnp.asarray(ids), px)[0]  # no rng: no dropout
    assert tiny.rel_err(np.asarray(a), np.asarray(plain), mask) > 1e-3
    assert tiny.rel_err(np.asarray(run(model, params, jax.random.key(8))), np.asarray(a), mask) > 1e-3
