"""The training run: mesh -> base model -> trainable/frozen split -> data -> resume or init ->
jitted steps -> checkpoints and logs. `run(config)` is what `python -m vlguard_jax.train` calls.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec

from vlguard_jax import sharding
from vlguard_jax.data.pipeline import Layout, dataset, prepare, steps_for
from vlguard_jax.data.tokenize import IGNORE
from vlguard_jax.loading import load_model
from vlguard_jax.models import LlavaModel, abstract_params, param_axes
from vlguard_jax.models.layers import LORA_PARAMS, LoraSpec
from vlguard_jax.train import flops
from vlguard_jax.train.checkpoints import Checkpoints
from vlguard_jax.train.metrics import Logger, peak_flops
from vlguard_jax.train.state import cast_tree, optimizer, partition, schedule
from vlguard_jax.train.step import make_train_step


class NonFiniteError(RuntimeError):
    pass


def maybe_initialize_distributed() -> None:
    """Several processes: `jax.distributed.initialize` from the environment (TPU pods detect it
    themselves; elsewhere JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)."""
    addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if addr and not jax.distributed.is_initialized():
        # CPU collectives across processes (affects only the CPU backend; must precede init).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(addr, int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"]))
    elif os.environ.get("TPU_WORKER_HOSTNAMES") and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def lora_spec(cfg) -> LoraSpec | None:
    if cfg.train.mode != "lora":
        return None
    return LoraSpec(cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, tuple(cfg.lora.targets))


def build_params(cfg, mesh):
    """(model, trainable, frozen, axes): base weights restored sharded (frozen ones in the compute
    dtype), LoRA factors freshly initialised, trainable weights in float32."""
    dtype = jnp.dtype(cfg.model.dtype)
    base = load_model(cfg.model.checkpoint, mesh=mesh, dtype=dtype, param_dtype=dtype,
                      attn_impl=cfg.model.attn_impl, remat_policy=cfg.model.remat)
    model = LlavaModel(base.config, dtype=dtype, param_dtype=dtype, attn_impl=cfg.model.attn_impl,
                       remat_policy=cfg.model.remat, lora=lora_spec(cfg))
    params = base.params
    axes = param_axes(model)
    if model.lora is not None:
        shapes = abstract_params(model, mesh)
        lora_keys = [k for k in traverse_util.flatten_dict(shapes) if k[-1] in LORA_PARAMS]

        def init_lora(rng):
            from vlguard_jax.models import dummy_inputs
            full = model.init(rng, *dummy_inputs(base.config))["params"]
            flat = traverse_util.flatten_dict(full)
            return {k: jax.tree.leaves(flat[k])[0] for k in lora_keys}

        flat_shapes = traverse_util.flatten_dict(shapes)
        out = {k: flat_shapes[k].sharding for k in lora_keys}
        lora = jax.jit(init_lora, out_shardings=out)(jax.random.key(cfg.seed))
        flat = traverse_util.flatten_dict(params)
        flat.update(lora)
        params = traverse_util.unflatten_dict(flat)
    trainable, frozen = partition(params, cfg.train.mode)
    trainable = jax.jit(lambda t: cast_tree(t, jnp.float32))(trainable)
    return model, base, trainable, frozen, axes


def opt_shardings(opt, trainable, mesh):
    """Adam moments take their parameter's sharding (found by key path); counts are replicated."""
    abstract = jax.eval_shape(opt.init, trainable)
    replicated = NamedSharding(mesh, PartitionSpec())
    by_path = {k: v.sharding for k, v in traverse_util.flatten_dict(trainable).items()}

    def pick(path, leaf):
        keys = tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey))
        for n in range(len(keys), 0, -1):
            if keys[-n:] in by_path and by_path[keys[-n:]].shard_shape(leaf.shape) is not None:
                return by_path[keys[-n:]]
        return replicated
    return jax.tree_util.tree_map_with_path(pick, abstract)


def global_batch(batch: dict, mesh) -> dict:
    spec = sharding.logical_to_spec(("batch",), mesh=mesh)
    out = {}
    for k, v in batch.items():
        sh = NamedSharding(mesh, PartitionSpec(*spec, *([None] * (v.ndim - 1))))
        out[k] = jax.make_array_from_process_local_data(sh, v)
    return out


def state_shardings_for(opt, trainable, mesh) -> dict:
    replicated = NamedSharding(mesh, PartitionSpec())
    return {"step": replicated, "params": jax.tree.map(lambda x: x.sharding, trainable),
            "opt": opt_shardings(opt, trainable, mesh), "rng": replicated}


def _fresh_state(opt, seed: int):
    return lambda t: {"step": jnp.int32(0), "params": t, "opt": opt.init(t),
                      "rng": jax.random.key_data(jax.random.key(seed))}


def init_state(opt, trainable, mesh, seed: int = 0):
    """(state, its shardings): step 0, the trainable weights, optimizer state, rng."""
    shardings = state_shardings_for(opt, trainable, mesh)
    return jax.jit(_fresh_state(opt, seed), out_shardings=shardings)(trainable), shardings


def abstract_state(opt, trainable, shardings):
    shapes = jax.eval_shape(_fresh_state(opt, 0), trainable)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def jit_train_step(model, opt, accum: int, loss_chunk: int, mesh, shardings):
    """The jitted step(state, frozen, batch, label_budget); the state is donated. `label_budget`
    (static) bounds the supervised positions per row, so the lm_head runs only there."""
    def wrapped(state, frozen, batch, label_budget):
        with sharding.use_mesh(mesh):
            step_fn = make_train_step(model, opt, accum, loss_chunk, label_budget)
            state = dict(state, rng=jax.random.wrap_key_data(state["rng"]))
            new, metrics = step_fn(state, frozen, batch)
            return dict(new, rng=jax.random.key_data(new["rng"])), metrics
    return jax.jit(wrapped, donate_argnums=(0,), static_argnums=(3,), out_shardings=(shardings, None))


def label_budget(labels: np.ndarray, length: int, quantum: int = 64) -> int:
    """Most supervised (shifted) positions in any row of this process's batch, rounded up to
    `quantum`, agreed on by all processes."""
    most = int((np.asarray(labels)[:, 1:] != IGNORE).sum(axis=1).max()) if len(labels) else 0
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        most = int(np.max(multihost_utils.process_allgather(np.int32(most))))
    return max(quantum, min(length - 1, -(-most // quantum) * quantum))


def run(cfg, log_fn=None) -> dict:
    """Train to `total_steps` (or `epochs`), resuming from `workdir` when it holds checkpoints.
    Returns {"step", "loss"} of the last step."""
    maybe_initialize_distributed()
    workdir = Path(cfg.workdir or "")
    if not cfg.workdir:
        raise ValueError("config.workdir is empty; pass --config.workdir=DIR")
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh(tuple(cfg.mesh.shape))
    if cfg.global_batch % cfg.micro_batch:
        raise ValueError(f"global_batch {cfg.global_batch} is not a multiple of micro_batch {cfg.micro_batch}")
    accum = cfg.global_batch // cfg.micro_batch
    main = jax.process_index() == 0
    say = log_fn or (lambda s: print(s, flush=True) if main else None)

    with sharding.use_mesh(mesh):
        model, base, trainable, frozen, _ = build_params(cfg, mesh)
    layout = Layout(global_batch=cfg.global_batch, epochs=cfg.epochs, seed=cfg.seed,
                    max_length=cfg.data.max_length, pad_to=cfg.data.pad_to, bucket=cfg.data.bucket,
                    group_by_modality=cfg.data.group_by_modality, process_index=jax.process_index(),
                    process_count=jax.process_count())
    rows = prepare(cfg.data, base.tokenizer, base.config, workdir, layout, log=say)
    total = cfg.total_steps if cfg.total_steps > 0 else steps_for(len(rows.store), layout)
    if total > rows.steps:
        rows = rows.with_epochs(-(-total * cfg.global_batch // len(rows.store)))

    opt = optimizer(cfg.optim, total, trainable)
    n_train = sum(x.size for x in jax.tree.leaves(trainable))
    n_frozen = sum(x.size for x in jax.tree.leaves(frozen))
    say(f"mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} devices, "
        f"{jax.process_count()} process(es)")
    say(f"parameters: {n_train + n_frozen:,} total, {n_train:,} trainable ({cfg.train.mode}); "
        f"{total} steps of {cfg.global_batch} examples ({accum} micro-batches of {cfg.micro_batch})")

    ckpt = Checkpoints(workdir, cfg.checkpoint_every, cfg.keep_checkpoints)
    meta = {"base_checkpoint": str(Path(cfg.model.checkpoint).resolve()), "mode": cfg.train.mode,
            "lora": cfg.lora.to_dict() if cfg.train.mode == "lora" else None, "config": cfg.to_json()}
    it = iter(dataset(rows, workers=cfg.data.workers))
    latest = ckpt.latest()
    if latest is None:
        state, state_shardings = init_state(opt, trainable, mesh, cfg.seed)
        start = 0
    else:
        state_shardings = state_shardings_for(opt, trainable, mesh)
        state, data_state, _ = ckpt.restore(latest, abstract_state(opt, trainable, state_shardings))
        it.set_state(data_state)
        start = int(latest)
        say(f"resumed from {workdir / 'checkpoints'} at step {start}")
    del trainable

    train_step = jit_train_step(model, opt, accum, cfg.loss_chunk, mesh, state_shardings)
    logger = Logger(workdir, total, start)
    lr_at = schedule(cfg.optim.lr, total, cfg.optim.warmup_ratio)
    peak = peak_flops()
    last = {"step": start, "loss": None}
    window_t, window_tokens, window_flops = time.perf_counter(), 0, 0.0
    try:
        for step in range(start, total):
            local = next(it)
            length = local["input_ids"].shape[1]
            budget = label_budget(local["labels"], length)
            state, m = train_step(state, frozen, global_batch(local, mesh), budget)
            window_tokens += cfg.global_batch * length
            window_flops += flops.train_step(base.config, cfg.global_batch, length, cfg.train.mode,
                                             cfg.lora.rank if cfg.train.mode == "lora" else 0, budget)
            done = step + 1
            if not bool(m["finite"]):
                raise NonFiniteError(
                    f"step {done}: non-finite loss {float(m['loss'])} or gradient norm "
                    f"{float(m['grad_norm'])}; stopped. The last good checkpoint is "
                    f"{ckpt.latest()} in {workdir / 'checkpoints'}")
            logger.advance()
            if done % cfg.log_every == 0 or done == total:
                elapsed = time.perf_counter() - window_t
                metrics = {"loss": float(m["loss"]), "lr": float(lr_at(done - 1)), "grad_norm": float(m["grad_norm"]),
                           "supervised_tokens": int(m["tokens"]), "tokens_per_s": window_tokens / elapsed,
                           "mfu": (window_flops / elapsed / (peak * jax.device_count())) if peak else None}
                logger.write(done, metrics)
                window_t, window_tokens, window_flops = time.perf_counter(), 0, 0.0
            ckpt.save(done, state, it.get_state(), meta, force=done == total)
            last = {"step": done, "loss": float(m["loss"])}
    finally:
        ckpt.wait()
        ckpt.close()
        logger.close()
    return last
