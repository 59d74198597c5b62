"""The jitted step on a tiny model: accumulation, sharding, what changes, learning rates, loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from tests.train import common
from vlguard_jax import sharding
from vlguard_jax.data.config import DataConfig
from vlguard_jax.data.pipeline import Layout, dataset, prepare
from vlguard_jax.families import family_of
from vlguard_jax.models.stacking import to_per_layer
from vlguard_jax.train.config import RunConfig
from vlguard_jax.train.loop import build_params
from vlguard_jax.train.state import TrainState, global_batch, optimizer
from vlguard_jax.train.step import make_train_step, token_loss_sums


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("step")
    return common.setup(tmp), tmp


def batches(ns, tmp, cfg, n=3):
    lay = Layout(
        global_batch=cfg.global_batch,
        epochs=1,
        seed=0,
        max_length=cfg.data.max_length,
        pad_to=cfg.data.pad_to,
        bucket=cfg.data.bucket,
    )
    from vlguard_jax.checkpoints.loading import load_model

    base = load_model(ns.flax_dir, dtype=jnp.float32)
    rows = prepare(
        DataConfig.from_config(cfg.data),
        base.tokenizer,
        family_of(base.config).model_inputs(base.config),
        tmp / "data",
        lay,
        log=lambda *_: None,
    )
    it = iter(dataset(rows))
    return [next(it) for _ in range(n)]


def run_steps(cfg, data, mesh_shape=(1, 1, 1), accum=1, steps=None, opt=None):
    mesh = sharding.make_mesh(mesh_shape)
    with sharding.use_mesh(mesh):
        start = build_params(RunConfig.from_config(cfg), mesh)
    model, trainable, frozen = start.model, start.trainable, start.frozen
    opt = opt or optimizer(RunConfig.from_config(cfg).optim, 10, trainable, family_of(start.base.config))
    state = TrainState(step=jnp.int32(0), params=trainable, opt=opt.init(trainable), rng=jax.random.key(0))
    step = make_train_step(model, opt, accum, cfg.loss_chunk)

    def f(state, frozen, batch):
        with sharding.use_mesh(mesh):
            return step(state, frozen, batch)

    f = jax.jit(f)
    losses = []
    for b in data[:steps]:
        state, m = f(state, frozen, global_batch(b, mesh))
        losses.append(float(m["loss"]))
    return state, frozen, losses, (model, trainable)


def flat(tree):
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(tree)).items()}


def test_lora_split_and_only_trainables_change(env):
    ns, tmp = env
    cfg = common.config(ns, tmp / "w1")
    data = batches(ns, tmp, cfg)
    state, frozen, losses, (_, before) = run_steps(cfg, data)
    names = set(flat(before))
    assert names and all(n.startswith("projector/") or n.endswith(("lora_a", "lora_b")) for n in names)
    assert any(n.startswith("projector/") for n in names) and any("q_proj/lora_a" in n for n in names)
    assert not any(n.startswith("vision_tower") for n in names)
    # No optimizer state for frozen weights: Adam moments exist only for trainable leaves.
    n_opt = sum(x.size for x in jax.tree.leaves(state.opt))
    n_train = sum(x.size for x in jax.tree.leaves(before))
    assert n_opt <= 2 * n_train + 16
    after, b = flat(state.params), flat(before)
    assert all(not np.array_equal(after[k], b[k]) for k in b if k.endswith("lora_b") or k.startswith("projector"))
    # The frozen base is bit-identical to the checkpoint.
    from vlguard_jax.checkpoints.loading import load_model

    base = flat(load_model(ns.flax_dir, dtype=jnp.float32).params)
    fz = flat(frozen)
    assert set(fz) | {k for k in b if k.startswith("projector")} == set(base)
    assert all(np.array_equal(fz[k], base[k]) for k in fz)


@pytest.mark.slow
def test_projector_has_its_own_learning_rate(env):
    ns, tmp = env
    data = batches(ns, tmp, common.config(ns, tmp / "w"), 2)
    for lr, plr in ((0.0, 1e-3), (1e-3, 0.0)):
        cfg = common.config(ns, tmp / "w", **{"optim.lr": lr, "optim.projector_lr": plr})
        state, _, _, (_, before) = run_steps(cfg, data)
        after, b = flat(state.params), flat(before)
        proj_moved = any(not np.array_equal(after[k], b[k]) for k in b if k.startswith("projector"))
        lora_moved = any(not np.array_equal(after[k], b[k]) for k in b if "lora" in k)
        assert (proj_moved, lora_moved) == (plr > 0, lr > 0)


@pytest.mark.slow
def test_accumulating_four_micro_batches_of_two_equals_one_batch_of_eight(env):
    ns, tmp = env
    cfg = common.config(ns, tmp / "w")
    data = batches(ns, tmp, cfg, 2)
    # Plain SGD, so the parameter change is the gradient itself (Adam's g/|g| amplifies
    # float rounding in near-zero gradients).
    one, _, l1, _ = run_steps(cfg, data, accum=1, opt=optax.sgd(1.0))
    four, _, l4, _ = run_steps(cfg, data, accum=4, opt=optax.sgd(1.0))
    np.testing.assert_allclose(l1, l4, rtol=1e-6)
    a, b = flat(one.params), flat(four.params)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.slow
@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")
@pytest.mark.parametrize("mode", ["lora", "full"])
def test_sharded_steps_match_one_device(env, mode):
    ns, tmp = env
    cfg = common.config(ns, tmp / "w", **{"train.mode": mode, "optim.lr": 1e-3})
    data = batches(ns, tmp, cfg, 3)
    # SGD: parameters move by the gradient itself, which must agree to 1e-5 (Adam's g/|g| would
    # amplify float rounding in near-zero gradients).
    one, _, l1, _ = run_steps(cfg, data, opt=optax.sgd(0.5))
    sharded, _, l8, _ = run_steps(cfg, data, mesh_shape=(2, 2, 2), accum=2, opt=optax.sgd(0.5))
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    a, b = flat(one.params), flat(sharded.params)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    leaf = jax.tree.leaves(sharded.params)[0]
    assert leaf.sharding.mesh.size == 8


@pytest.mark.slow
@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")
def test_scanned_layers_train_as_unrolled_ones(env):
    """`model.scan_layers`: the same losses and updates as the unrolled layers, to 1e-5, sharded
    over (data, fsdp, tensor) = (2, 2, 2). Full training: every layer's weights move. (LoRA runs
    scanned in tests/train/test_loop.py, and its factor gradients in tests/models/test_llama.py.)"""
    ns, tmp = env
    mesh_shape = (2, 2, 2)
    cfg = common.config(ns, tmp / "w", **{"train.mode": "full", "optim.lr": 1e-3, "model.remat": "dots"})
    data = batches(ns, tmp, cfg, 2)
    unrolled, _, l1, _ = run_steps(cfg, data, mesh_shape, opt=optax.sgd(0.5))
    cfg.model.scan_layers = "on"
    scanned, _, l2, (model, _) = run_steps(cfg, data, mesh_shape, opt=optax.sgd(0.5))
    assert model.scan_layers
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    a, b = flat(unrolled.params), flat(to_per_layer(jax.device_get(scanned.params)))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_loss_is_the_token_mean_over_supervised_tokens(env):
    """Chunked loss == cross-entropy from full logits, on the supervised positions only."""
    ns, tmp = env
    cfg = common.config(ns, tmp / "w")
    b = batches(ns, tmp, cfg, 1)[0]
    mesh = sharding.make_mesh((1, 1, 1))
    start = build_params(RunConfig.from_config(cfg), mesh)
    from vlguard_jax.train.state import merge

    model, params = start.model, merge(start.trainable, start.frozen)
    total, count = token_loss_sums(model, params, b, None, chunk=7)
    logits, _ = model.apply({"params": params}, b["input_ids"], b["pixel_values"])
    logp = jax.nn.log_softmax(np.asarray(logits, np.float64)[:, :-1], -1)
    y = b["labels"][:, 1:]
    m = y != -100
    ref = -np.take_along_axis(np.asarray(logp), np.where(m, y, 0)[..., None], -1)[..., 0][m]
    assert int(count) == m.sum() > 0
    np.testing.assert_allclose(float(total), ref.sum(), rtol=1e-5)
    # The lm_head only at supervised positions (the label budget) gives the same sums.
    from vlguard_jax.train.step import label_budget

    k = label_budget(b["labels"], b["labels"].shape[1], quantum=8)
    assert k < b["labels"].shape[1] - 1
    total_k, count_k = token_loss_sums(model, params, b, None, chunk=7, label_budget=k)
    assert int(count_k) == int(count)
    np.testing.assert_allclose(float(total_k), ref.sum(), rtol=1e-5)
