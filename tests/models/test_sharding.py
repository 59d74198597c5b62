"""Sharded loading and forward on 8 simulated CPU devices give the single-device logits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

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
    ids, mask, pixels = tiny.batch(built.cfg, built.tok, rows=("image", "text") * 4,
                                   lengths=(9, 6, 12, 3, 7, 10, 5, 8))
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
    jax.tree.map(lambda a, s: (a.shape == s.shape and a.sharding == s.sharding) or pytest.fail(str(a)),
                 params, abstract)
    up = params["language_model"]["layers_0"]["mlp"]["up_proj"]["kernel"]
    assert len({d for d in up.sharding.device_set}) == 8 and up.sharding.spec == P("fsdp", "tensor")


def test_mesh_shape_errors():
    with pytest.raises(ValueError, match="needs 16 devices"):
        make_mesh((4, 2, 2))
    with pytest.raises(ValueError, match="at most one entry may be -1"):
        make_mesh((-1, -1, 1))
    assert make_mesh((-1, 1, 2)).shape == {"data": 4, "fsdp": 1, "tensor": 2}
