"""The training run: mesh -> base model -> trainable/frozen split -> data -> resume or init ->
jitted steps -> checkpoints and logs. `run(config)` is what `python -m vlguard_jax.train` calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from vlguard_jax import sharding, storage
from vlguard_jax.checkpoints.loading import load_model
from vlguard_jax.checkpoints.ref import CheckpointRef, resolve_checkpoint
from vlguard_jax.checkpoints.runs import RunMeta
from vlguard_jax.checkpoints.training import Checkpoints
from vlguard_jax.data.config import DataConfig
from vlguard_jax.data.pipeline import Layout, dataset, prepare, steps_for
from vlguard_jax.data.preprocess import IGNORE
from vlguard_jax.errors import ConfigError, UserError, oom_hint
from vlguard_jax.models import abstract_params, dummy_inputs, family_of, param_axes
from vlguard_jax.models.layers import LORA_PARAMS, LoraSpec
from vlguard_jax.models.stacking import to_per_layer, to_stacked
from vlguard_jax.runtime import Preemption, maybe_initialize_distributed, peak_flops
from vlguard_jax.train import flops
from vlguard_jax.train.metrics import Logger
from vlguard_jax.train.state import TrainState, cast_tree, optimizer, partition, schedule
from vlguard_jax.train.step import make_train_step
from vlguard_jax.train.validate import check as check_config
from vlguard_jax.train.workdir import Lock, check_resume, identity


class NonFiniteError(UserError, RuntimeError):
    pass


def lora_spec(cfg) -> LoraSpec | None:
    if cfg.train.mode != "lora":
        return None
    return LoraSpec(cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, tuple(cfg.lora.targets))


def build_params(cfg, mesh, checkpoint: CheckpointRef | None = None):
    """(model, trainable, frozen, axes): base weights restored sharded (frozen ones in the compute
    dtype), LoRA factors freshly initialised, trainable weights in float32. `checkpoint`: the
    base, resolved from `cfg.model.checkpoint` when not given."""
    dtype = jnp.dtype(cfg.model.dtype)
    base = load_model(
        checkpoint or cfg.model.checkpoint,
        mesh=mesh,
        dtype=dtype,
        param_dtype=dtype,
        attn_impl=cfg.model.attn_impl,
        remat_policy=cfg.model.remat,
        scan_layers=cfg.model.scan_layers,
    )
    model = base.model.clone(lora=lora_spec(cfg))
    params = base.params
    axes = param_axes(model)
    if model.lora is not None:
        shapes = abstract_params(model, mesh)
        lora_keys = [k for k in traverse_util.flatten_dict(shapes) if k[-1] in LORA_PARAMS]

        def init_lora(rng):
            # Drawn per layer whatever the form, so scanning does not change a run's start.
            full = nn.unbox(model.clone(scan_layers=False).init(rng, *dummy_inputs(base.config))["params"])
            flat = traverse_util.flatten_dict(to_stacked(full) if model.scan_layers else full)
            return {k: flat[k] for k in lora_keys}

        flat_shapes: dict[tuple, Any] = traverse_util.flatten_dict(shapes)
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
    flat: dict[tuple, Any] = traverse_util.flatten_dict(trainable)
    by_path = {k: v.sharding for k, v in flat.items()}

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


def state_shardings_for(opt, trainable, mesh) -> TrainState:
    replicated = NamedSharding(mesh, PartitionSpec())
    return TrainState(
        step=replicated,
        params=jax.tree.map(lambda x: x.sharding, trainable),
        opt=opt_shardings(opt, trainable, mesh),
        rng=replicated,
    )


def _fresh_state(opt, seed: int):
    return lambda t: TrainState(
        step=jnp.int32(0), params=t, opt=opt.init(t), rng=jax.random.key_data(jax.random.key(seed))
    )


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
            state = state.replace(rng=jax.random.wrap_key_data(state.rng))
            new, metrics = step_fn(state, frozen, batch)
            return new.replace(rng=jax.random.key_data(new.rng)), metrics

    return jax.jit(wrapped, donate_argnums=(0,), static_argnums=(3,), out_shardings=(shardings, None))


def label_budget(labels: np.ndarray, length: int, quantum: int = 64) -> int:
    """Most supervised (shifted) positions in any row of this process's batch, rounded up to
    `quantum`, agreed on by all processes."""
    most = int((np.asarray(labels)[:, 1:] != IGNORE).sum(axis=1).max()) if len(labels) else 0
    if jax.process_count() > 1:
        most = int(np.max(multihost_utils.process_allgather(np.int32(most))))
    return max(quantum, min(length - 1, -(-most // quantum) * quantum))


def run(cfg, log_fn=None) -> dict:
    """Train to `total_steps` (or `epochs`), resuming from `workdir` when it holds checkpoints.
    Returns {"step", "loss"} of the last step. The config is checked before anything loads, and
    the workdir is locked while the run is live (see train.workdir)."""
    maybe_initialize_distributed()
    check_config(cfg)
    workdir = storage.as_path(cfg.workdir)
    fresh = not storage.is_remote(cfg.workdir) and not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    main = jax.process_index() == 0
    try:
        try:
            mesh = sharding.make_mesh(tuple(cfg.mesh.shape))
        except ValueError as e:
            raise ConfigError(f"config.mesh.shape: {e}") from None
        say = log_fn or (lambda s: print(s, flush=True) if main else None)
        with Lock(workdir, say) if main else contextlib.nullcontext(), Preemption() as preemption:
            result = _run(cfg, workdir, mesh, say, preemption)
    except BaseException:
        if fresh and main:
            _remove_if_empty(workdir)
        raise
    return result


def _remove_if_empty(workdir: Path) -> None:
    """A run refused before it wrote anything leaves no workdir behind (only empty directories
    were made: the workdir and its checkpoints folder)."""
    if workdir.is_dir() and not any(p.is_file() for p in workdir.rglob("*")):
        shutil.rmtree(workdir, ignore_errors=True)


@dataclasses.dataclass
class Setup:
    """What the step loop runs on, built once per start."""

    cfg: Any
    workdir: Path
    mesh: Any
    model: Any  # LlavaModel, with LoRA when training LoRA
    base: Any  # the loaded base checkpoint (config, tokenizer)
    frozen: Any  # frozen weights, in the compute dtype
    opt: Any  # optax transformation
    total: int  # steps of the whole run
    accum: int  # micro-batches per step
    meta: RunMeta  # saved with every checkpoint


def _run(cfg, workdir: Path, mesh, say, preemption: Preemption) -> dict:
    ckpt = Checkpoints(workdir, cfg.checkpoint_every, cfg.keep_checkpoints)
    try:
        return _train(cfg, workdir, mesh, say, ckpt, preemption)
    finally:
        ckpt.close()


def _train(cfg, workdir: Path, mesh, say, ckpt, preemption: Preemption) -> dict:
    latest = ckpt.latest()
    if latest is not None and 0 < cfg.total_steps < latest:
        raise ConfigError(
            f"config.total_steps: {cfg.total_steps} is below the {latest} steps this workdir's run "
            f"has done ({workdir / 'checkpoints'}); raise it, or use a new workdir"
        )
    checkpoint = resolve_checkpoint(cfg.model.checkpoint)
    if not checkpoint.family.trainable:
        raise ConfigError(
            f"config.model.checkpoint: {cfg.model.checkpoint} is a text-only Llama; training "
            "starts from a LLaVA checkpoint (conversion.assemble builds one from an LLM)"
        )
    if jax.process_index() == 0:  # a new run records its identity; a resume must match it
        check_resume(
            workdir,
            identity(cfg, checkpoint),
            latest is None or cfg.allow_resume_changes,
            say if latest is not None else (lambda _: None),
        )
    with sharding.use_mesh(mesh):
        model, base, trainable, frozen, _ = build_params(cfg, mesh, checkpoint)
    layout = Layout(
        global_batch=cfg.global_batch,
        epochs=cfg.epochs,
        seed=cfg.seed,
        max_length=cfg.data.max_length,
        pad_to=cfg.data.pad_to,
        bucket=cfg.data.bucket,
        group_by_modality=cfg.data.group_by_modality,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    rows = prepare(DataConfig.from_config(cfg.data), base.tokenizer, base.config, workdir, layout, log=say)
    total = cfg.total_steps if cfg.total_steps > 0 else steps_for(len(rows.store), layout)
    if latest is not None and latest > total:
        raise ConfigError(
            f"config.epochs: {cfg.epochs} epochs are {total} steps, below the {latest} steps this "
            f"workdir's run has done ({workdir / 'checkpoints'}); raise it, or use a new workdir"
        )
    if total > rows.steps:
        rows = rows.with_epochs(-(-total * cfg.global_batch // len(rows.store)))

    accum = cfg.global_batch // cfg.micro_batch
    opt = optimizer(cfg.optim, total, trainable)
    n_train = sum(x.size for x in jax.tree.leaves(trainable))
    n_frozen = sum(x.size for x in jax.tree.leaves(frozen))
    say(
        f"mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} devices, "
        f"{jax.process_count()} process(es)"
    )
    say(
        f"parameters: {n_train + n_frozen:,} total, {n_train:,} trainable ({cfg.train.mode}); "
        f"{total} steps of {cfg.global_batch} examples ({accum} micro-batches of {cfg.micro_batch})"
    )
    meta = RunMeta(
        base_checkpoint=storage.absolute(cfg.model.checkpoint),
        mode=cfg.train.mode,
        lora=lora_spec(cfg),
        scan_layers=model.scan_layers,
        family=family_of(base.config).name,
        config=cfg.to_json(),
    )
    setup = Setup(cfg, workdir, mesh, model, base, frozen, opt, total, accum, meta)
    it = iter(dataset(rows, workers=cfg.data.workers))
    try:
        state, shardings, start = _resume(setup, ckpt, latest, it, trainable, say)
        del trainable
        return _steps(setup, ckpt, it, state, shardings, start, preemption, say)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # grain's worker processes


def _resume(s: Setup, ckpt, latest, it, trainable, say):
    """(state, its shardings, first step): fresh at step 0, or the latest checkpoint restored and
    the data iterator moved to its position."""
    if latest is None:
        state, shardings = init_state(s.opt, trainable, s.mesh, s.cfg.seed)
        return state, shardings, 0
    shardings = state_shardings_for(s.opt, trainable, s.mesh)
    stacked = ckpt.saved_stacked(latest)
    if stacked == s.model.scan_layers:
        state, data_state, _ = ckpt.restore(latest, abstract_state(s.opt, trainable, shardings))
    else:  # saved by a run with the other layer form: restored as saved, then converted
        state, data_state = _restore_other_form(s, ckpt, latest, stacked)
        n = s.base.config.text.num_hidden_layers
        convert = (lambda t: to_per_layer(t, n)) if stacked else to_stacked
        state = jax.jit(convert, out_shardings=shardings)(state)
        say(
            f"checkpoint {latest} holds the decoder layers {'stacked' if stacked else 'per layer'}; converted "
            f"for config.model.scan_layers={s.cfg.model.scan_layers!r}"
        )
    it.set_state(data_state)
    say(f"resumed from {s.workdir / 'checkpoints'} at step {latest}")
    return state, shardings, int(latest)


def _restore_other_form(s: Setup, ckpt, step: int, stacked: bool):
    """(state, data state) of a checkpoint whose layers are in the form `stacked`, which this run's
    model does not use, restored sharded as that form's model would hold it."""
    other = s.model.clone(scan_layers=stacked)
    trainable, _ = partition(abstract_params(other, s.mesh), s.cfg.train.mode)
    trainable = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, jnp.float32 if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype, sharding=x.sharding
        ),
        trainable,
    )
    opt = optimizer(s.cfg.optim, s.total, trainable)
    state, data_state, _ = ckpt.restore(
        step, abstract_state(opt, trainable, state_shardings_for(opt, trainable, s.mesh))
    )
    return state, data_state


def _steps(s: Setup, ckpt, it, state, shardings, start: int, preemption: Preemption, say) -> dict:
    cfg = s.cfg
    train_step = jit_train_step(s.model, s.opt, s.accum, cfg.loss_chunk, s.mesh, shardings)
    logger = Logger(s.workdir, s.total, start)
    lr_at = schedule(cfg.optim.lr, s.total, cfg.optim.warmup_ratio)
    peak = peak_flops()
    last = {"step": start, "loss": None}
    window_t, window_tokens, window_flops = time.perf_counter(), 0, 0.0
    try:
        for step in range(start, s.total):
            local = next(it)
            length = local["input_ids"].shape[1]
            budget = label_budget(local["labels"], length)
            with oom_hint(
                f"step {step + 1}: out of device memory for micro-batches of {cfg.micro_batch} rows of "
                f"{length} tokens; lower config.micro_batch (config.global_batch stays: more accumulation)"
            ):
                state, m = train_step(state, s.frozen, global_batch(local, s.mesh), budget)
            window_tokens += cfg.global_batch * length
            window_flops += flops.train_step(
                s.base.config,
                cfg.global_batch,
                length,
                cfg.train.mode,
                cfg.lora.rank if cfg.train.mode == "lora" else 0,
                budget,
            )
            done = step + 1
            if not bool(m["finite"]):
                raise NonFiniteError(
                    f"step {done}: non-finite loss {float(m['loss'])} or gradient norm "
                    f"{float(m['grad_norm'])}; stopped. The last good checkpoint is "
                    f"{ckpt.latest()} in {s.workdir / 'checkpoints'}"
                )
            logger.advance()
            if done % cfg.log_every == 0 or done == s.total:
                elapsed = time.perf_counter() - window_t
                metrics = {
                    "loss": float(m["loss"]),
                    "lr": float(np.asarray(lr_at(done - 1))),
                    "grad_norm": float(m["grad_norm"]),
                    "supervised_tokens": int(m["tokens"]),
                    "tokens_per_s": window_tokens / elapsed,
                    "mfu": (window_flops / elapsed / (peak * jax.device_count())) if peak else None,
                }
                logger.write(done, metrics)
                window_t, window_tokens, window_flops = time.perf_counter(), 0, 0.0
            preempted = done < s.total and preemption.at(done)
            ckpt.save(done, state, it.get_state(), s.meta, force=done == s.total or preempted)
            last = {"step": done, "loss": float(m["loss"])}
            if preempted:
                ckpt.wait()
                say(
                    f"preempted at step {done}: checkpoint {done} saved in {s.workdir / 'checkpoints'}; rerun the "
                    "same command to resume"
                )
                return dict(last, preempted=True)
    finally:
        ckpt.wait()
        logger.close()
    return last
