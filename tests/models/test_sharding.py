"""Sharded loading and forward on 8 simulated CPU devices give the single-device logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tests import tiny
from vlguard_jax import load_model, make_mesh
from vlguard_jax.models import abstract_params, init_params
from vlguard_jax.sharding import logical_to_spec, use_mesh

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny.build(tmp_path_factory.mktemp("shard"), heads=4, kv_heads=4)


@pytest.fixture(scope="module")
def inputs(built):
    ids, mask, pixels = tiny.batch(built.cfg, built.tok, rows=("image", "text") * 4, lengths=(9, 6, 12, 3, 7, 10, 5, 8))
    return ids, mask, tiny.row_pixels(ids, built.cfg, pixels)


@pytest.fixture(scope="module")
def reference(built, inputs):
    ids, _, px = inputs
    m = load_model(built.flax_dir, dtype=jnp.float32)
    return np.asarray(m.model.apply({"params": m.params}, jnp.asarray(ids), jnp.asarray(px))[0])


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 2, 4)])
def test_sharded_logits_match_single_device(built, inputs, reference, shape):
    mesh = make_mesh(shape)
    m = load_model(built.flax_dir, mesh=mesh, dtype=jnp.float32)
    q = m.params["language_model"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.spec == logical_to_spec(("embed", "heads"), q.shape, mesh)
    if shape == (1, 2, 4):
        assert q.sharding.spec == P("fsdp", "tensor")
        assert q.addressable_shards[0].data.shape == (q.shape[0] // 2, q.shape[1] // 4)
    ids, mask, px = inputs
    batch_sharding = NamedSharding(mesh, logical_to_spec(("batch", None), ids.shape, mesh))
    with use_mesh(mesh):
        fwd = jax.jit(lambda p, i, x: m.model.apply({"params": p}, i, x)[0])
        ours = fwd(m.params, jax.device_put(jnp.asarray(ids), batch_sharding), jnp.asarray(px))
    assert tiny.rel_err(ours, reference, mask) <= 1e-5


def test_sharded_init_from_abstract_shapes(built):
    """A model is created directly in its sharded layout: no full copy on one device."""
    m = load_model(built.flax_dir, dtype=jnp.float32, with_tokenizer=False)
    mesh = make_mesh((1, 2, 4))
    params = init_params(m.model, jax.random.key(0), mesh)
    abstract = abstract_params(m.model, mesh)
    jax.tree.map(
        lambda a, s: (a.shape == s.shape and a.sharding == s.sharding) or pytest.fail(str(a)), params, abstract
    )
    up = params["language_model"]["layers_0"]["mlp"]["up_proj"]["kernel"]
    assert len({d for d in up.sharding.device_set}) == 8 and up.sharding.spec == P("fsdp", "tensor")


def test_scanned_layers_shard_as_the_unrolled_ones_with_the_layer_axis_whole(built):
    m = load_model(built.flax_dir, dtype=jnp.float32, with_tokenizer=False)
    mesh = make_mesh((1, 2, 4))
    scanned = abstract_params(m.model.clone(scan_layers=True), mesh)["language_model"]["layers"]
    unrolled = abstract_params(m.model, mesh)["language_model"]["layers_0"]
    q = scanned["self_attn"]["q_proj"]["kernel"]
    assert q.shape == (3, *unrolled["self_attn"]["q_proj"]["kernel"].shape)
    jax.tree.map(lambda s, u: s.sharding.spec == P(None, *u.sharding.spec) or pytest.fail(str(s)), scanned, unrolled)


def test_mesh_shape_errors():
    with pytest.raises(ValueError, match="needs 16 devices"):
        make_mesh((4, 2, 2))
    with pytest.raises(ValueError, match="at most one entry may be -1"):
        make_mesh((-1, -1, 1))
    assert make_mesh((-1, 1, 2)).shape == {"data": 4, "fsdp": 1, "tensor": 2}


REMAT = "Involuntary full rematerialization"
# Compiled in a fresh process without the persistent cache: an executable found there is not
# compiled, so it warns nothing. Between the two programs a marker splits stderr.
LOOKUPS = """
import sys
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding
from vlguard_jax import load_model, make_mesh
from vlguard_jax.sharding import constrain, logical_to_spec, use_mesh
mesh = make_mesh((2, 2, 2))
m = load_model(sys.argv[1], mesh=mesh, dtype=jnp.float32, with_tokenizer=False)
ids = jax.device_put(jnp.ones((8, 17), jnp.int32), NamedSharding(mesh, logical_to_spec(("batch", None), (8, 17), mesh)))
table = m.params["language_model"]["embed_tokens"]
assert table.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp"), table.sharding

def bare(t, i):
    with use_mesh(mesh):
        return constrain(jnp.take(t, i, axis=0), ("batch", "length", "act_embed"))

def loss(p, i):
    with use_mesh(mesh):
        return m.model.apply({"params": p}, i)[0].sum()

jax.jit(bare).lower(table, ids).compile()
print("=== the model", file=sys.stderr, flush=True)
jax.jit(jax.grad(loss)).lower(m.params, ids).compile()
"""


@pytest.mark.slow
def test_fsdp_embedding_lookup_compiles_without_full_rematerialization(built):
    """Under fsdp the embedding table is split along `embed`; a lookup from those shards gives rows
    split along `embed`, which XLA's partitioner can turn into batch shards only by replicating
    them ("Involuntary full rematerialization"). The model's lookup and its gradient compile
    without that warning; the bare lookup, compiled the same way first, shows that the warning
    is seen."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(
        JAX_ENABLE_COMPILATION_CACHE="false", JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8"
    )
    run = subprocess.run(
        [sys.executable, "-c", LOOKUPS, str(built.flax_dir)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    bare, model = run.stderr.split("=== the model")
    assert REMAT in bare
    assert REMAT not in model, model[-3000:]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """A tiny Qwen2.5-VL and a batch of 8 rows: images of two sizes in one bucket, text-only rows."""
    from tests import tiny_qwen
    from vlguard_jax.families import family_of

    ns = tiny_qwen.build(tmp_path_factory.mktemp("qwen_shard"))
    m = load_model(ns.flax_dir, dtype=jnp.float32)
    image = family_of(m.config).image_input(m.config)
    shots = [image.pixels(tiny_qwen.image(w, h, seed=w), pad=False) for w, h in ((100, 60), (60, 100))]
    room = max(image.rule.room_of(x) for x in shots)
    rows = [image.rule.widen(shots[k % 2] if k < 6 else image.rule.blank((), 3), room) for k in range(8)]
    ids = [tiny_qwen.prompt(image.count(x), 3 + k, 2, seed=k) for k, x in enumerate(rows)]
    t = max(len(r) for r in ids)
    ids_a = np.zeros((8, t), np.int32)
    mask = np.zeros((8, t), np.int32)
    for k, r in enumerate(ids):
        ids_a[k, t - len(r) :], mask[k, t - len(r) :] = r, 1
    pixels = jax.tree.map(lambda *xs: np.stack(xs), *rows)
    positions, _ = m.model.prompt_positions(jnp.asarray(ids_a), jnp.asarray(mask), pixels)
    ref = m.model.apply({"params": m.params}, ids_a, pixels, attention_mask=mask, positions=positions)[0]
    return ns, ids_a, mask, pixels, positions, np.asarray(ref)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 2, 4)])
def test_qwen_sharded_logits_match_single_device(qwen, shape):
    """Qwen2.5-VL's tower, merger and M-RoPE decoder under the logical-axis rules."""
    ns, ids, mask, pixels, positions, reference = qwen
    mesh = make_mesh(shape)
    m = load_model(ns.flax_dir, mesh=mesh, dtype=jnp.float32)
    qkv = m.params["visual"]["blocks_0"]["qkv"]["kernel"]
    assert qkv.sharding.spec == logical_to_spec(("vision_embed", "vision_heads"), qkv.shape, mesh)
    with use_mesh(mesh):
        fwd = jax.jit(lambda p, i, x, a, q: m.model.apply({"params": p}, i, x, attention_mask=a, positions=q)[0])
        ours = fwd(m.params, ids, pixels, mask, positions)
    assert tiny.rel_err(ours, reference, mask) <= 1e-5
