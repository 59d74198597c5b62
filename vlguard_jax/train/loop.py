"""The training run: mesh -> base model -> trainable/frozen split -> data -> resume or init ->
jitted steps -> checkpoints and logs. `run(config)` is what `python -m vlguard_jax.train` calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding

from vlguard_jax import sharding, storage
from vlguard_jax.checkpoints.loading import Loaded, load_model
from vlguard_jax.checkpoints.ref import CheckpointRef, resolve_checkpoint
from vlguard_jax.checkpoints.runs import RunMeta
from vlguard_jax.checkpoints.training import Checkpoints
from vlguard_jax.data.config import AUTO_TEMPLATE
from vlguard_jax.data.pipeline import Layout, dataset, prepare, steps_for
from vlguard_jax.errors import ConfigError, UserError, oom_hint
from vlguard_jax.families import family_of
from vlguard_jax.models import abstract_params
from vlguard_jax.models.config import LoraSpec
from vlguard_jax.models.layers import LORA_PARAMS
from vlguard_jax.models.stacking import to_per_layer, to_stacked
from vlguard_jax.runtime import Preemption, maybe_initialize_distributed, peak_flops
from vlguard_jax.train import flops
from vlguard_jax.train.config import RunConfig
from vlguard_jax.train.metrics import Logger
from vlguard_jax.train.state import (
    Params,
    TrainState,
    abstract_state,
    as_trained,
    cast_tree,
    global_batch,
    init_state,
    optimizer,
    partition,
    schedule,
    state_shardings,
)
from vlguard_jax.train.step import jit_train_step, label_budget
from vlguard_jax.train.validate import check as check_config
from vlguard_jax.train.workdir import LOCK, RUN, Lock, check_resume, identity

Say = Callable[[str], None]


class NonFiniteError(UserError, RuntimeError):
    pass


@dataclasses.dataclass
class Start:
    """The run's model and weights before its first step.

    model: the model to train (LlavaModel, with LoRA when training LoRA).
    base: the loaded base checkpoint (its config and tokenizer).
    trainable: float32 masters of the trained weights (train.state.partition), sharded.
    frozen: the other weights, in the compute dtype, sharded.
    """

    model: Any
    base: Loaded
    trainable: Params
    frozen: Params


def build_params(cfg: RunConfig, mesh: Mesh, checkpoint: CheckpointRef | None = None) -> Start:
    """Base weights restored sharded (frozen ones in the compute dtype), LoRA factors freshly
    initialised (or the checkpoint's own, where it carries them: a MiniGPT-v2 converted with
    --lora keep), trainable weights in float32. `checkpoint`: the base, resolved from
    `cfg.model.checkpoint` when not given."""
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
    model = base.model.clone(lora=cfg.lora_spec)
    params = base.params
    own = base.model.lora  # the checkpoint's LoRA: training continues from its factors
    if own is not None:
        _check_own_lora(cfg, own, checkpoint or cfg.model.checkpoint)
    elif model.lora is not None:
        shapes = abstract_params(model, mesh)
        lora_keys = [k for k in traverse_util.flatten_dict(shapes) if k[-1] in LORA_PARAMS]

        def init_lora(rng):
            # Drawn per layer whatever the form, so scanning does not change a run's start.
            full = nn.unbox(model.clone(scan_layers=False).init(rng, *model.example_inputs())["params"])
            flat = traverse_util.flatten_dict(to_stacked(full) if model.scan_layers else full)
            return {k: flat[k] for k in lora_keys}

        flat_shapes: dict[tuple, Any] = traverse_util.flatten_dict(shapes)
        out = {k: flat_shapes[k].sharding for k in lora_keys}
        lora = jax.jit(init_lora, out_shardings=out)(jax.random.key(cfg.seed))
        flat = traverse_util.flatten_dict(params)
        flat.update(lora)
        params = traverse_util.unflatten_dict(flat)
    trainable, frozen = partition(params, cfg.train.mode, as_trained(family_of(base.config), cfg.train))
    trainable = jax.jit(lambda t: cast_tree(t, jnp.float32))(trainable)
    return Start(model, base, trainable, frozen)


def run(config: Any, log_fn: Say | None = None) -> dict:
    """Train to `total_steps` (or `epochs`), resuming from `workdir` when it holds checkpoints.
    `config`: a RunConfig, or the ConfigDict a config file gives. Returns {"step", "loss"} of the
    last step. The config is checked before anything loads, and the workdir is locked while the
    run is live (see train.workdir)."""
    maybe_initialize_distributed()
    check_config(config.to_dict() if isinstance(config, RunConfig) else config)
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_config(config)
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
    """A run refused before it wrote anything leaves no workdir behind (only the workdir, its
    checkpoints folder and the run's identity, run.json, were made)."""
    made = (workdir / RUN, workdir / LOCK)
    if workdir.is_dir() and not any(p.is_file() and p not in made for p in workdir.rglob("*")):
        shutil.rmtree(workdir, ignore_errors=True)


def _check_own_lora(cfg: RunConfig, own: LoraSpec, where) -> None:
    """A checkpoint with its own LoRA factors trains them as they are: the run's LoRA must be
    theirs (rank, alpha, targets; the dropout is the run's)."""
    spec = cfg.lora_spec
    if spec is None:
        raise ConfigError(
            f"config.train.mode: {where} carries LoRA factors ({own.rank} on {', '.join(own.targets)}); full "
            "fine-tuning needs them merged (vlguard-convert minigptv2 --lora merge), or train.mode=lora"
        )
    if (spec.rank, spec.alpha, tuple(spec.targets)) != (own.rank, own.alpha, tuple(own.targets)):
        raise ConfigError(
            f"config.lora: rank {spec.rank}, alpha {spec.alpha} on {list(spec.targets)}, but {where} carries LoRA "
            f"factors of rank {own.rank}, alpha {own.alpha} on {list(own.targets)}; training continues from "
            "them, so set config.lora to match"
        )


@dataclasses.dataclass
class Setup:
    """What the step loop runs on, built once per start."""

    cfg: RunConfig
    workdir: Path
    mesh: Mesh
    model: Any  # LlavaModel, with LoRA when training LoRA
    base: Loaded  # the loaded base checkpoint (config, tokenizer)
    frozen: Params  # frozen weights, in the compute dtype
    opt: optax.GradientTransformation
    total: int  # steps of the whole run
    meta: RunMeta  # saved with every checkpoint
    image_rule: Any  # how the batches' images were made (data.images.PixelRule): their FLOPs vary with it


def _run(cfg: RunConfig, workdir: Path, mesh: Mesh, say: Say, preemption: Preemption) -> dict:
    ckpt = Checkpoints(workdir, cfg.checkpoint_every, cfg.keep_checkpoints)
    try:
        return _train(cfg, workdir, mesh, say, ckpt, preemption)
    finally:
        ckpt.close()


def _train(cfg: RunConfig, workdir: Path, mesh: Mesh, say: Say, ckpt: Checkpoints, preemption: Preemption) -> dict:
    latest = ckpt.latest()
    if latest is not None and 0 < cfg.total_steps < latest:
        raise ConfigError(
            f"config.total_steps: {cfg.total_steps} is below the {latest} steps this workdir's run "
            f"has done ({workdir / 'checkpoints'}); raise it, or use a new workdir"
        )
    checkpoint = resolve_checkpoint(cfg.model.checkpoint)
    if not checkpoint.family.trainable:
        raise ConfigError(
            f"config.model.checkpoint: {cfg.model.checkpoint} is a {checkpoint.family.label} checkpoint; "
            "training starts from a checkpoint of a family that trains (conversion.assemble builds a LLaVA from an LLM)"
        )
    if cfg.data.template == AUTO_TEMPLATE:  # the family's own rule, recorded as such in the run
        cfg = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, template=checkpoint.family.training_templates[0])
        )
    wrapped = [t for t in cfg.lora.targets if t not in checkpoint.family.lora_targets]
    if cfg.train.mode == "lora" and wrapped:
        raise ConfigError(
            f"config.lora.targets: a {checkpoint.family.label} has no LoRA target {wrapped[0]!r} "
            f"(its targets: {list(checkpoint.family.lora_targets)})"
        )
    if cfg.data.template not in checkpoint.family.training_templates:
        raise ConfigError(
            f"config.data.template: {cfg.data.template!r} does not train a {checkpoint.family.label} checkpoint "
            f"({cfg.model.checkpoint}); use one of {list(checkpoint.family.training_templates)}"
        )
    # A new run records its identity (process 0); a resume must match it, on every process, so
    # that a refused one stops them all rather than leaving the others at the next barrier.
    if jax.process_index() == 0 or latest is not None:
        check_resume(
            workdir,
            identity(cfg, checkpoint),
            latest is None or cfg.allow_resume_changes,
            say if latest is not None else (lambda _: None),
            write=jax.process_index() == 0,
        )
    with sharding.use_mesh(mesh):
        start = build_params(cfg, mesh, checkpoint)
    base, trainable, frozen = start.base, start.trainable, start.frozen
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
    rows = prepare(cfg.data, base.tokenizer, checkpoint.family.model_inputs(base.config), workdir, layout, log=say)
    total = cfg.total_steps if cfg.total_steps > 0 else steps_for(len(rows.store), layout)
    if latest is not None and latest > total:
        raise ConfigError(
            f"config.epochs: {cfg.epochs} epochs are {total} steps, below the {latest} steps this "
            f"workdir's run has done ({workdir / 'checkpoints'}); raise it, or use a new workdir"
        )
    if total > rows.steps:
        rows = rows.with_epochs(-(-total * cfg.global_batch // len(rows.store)))

    opt = optimizer(cfg.optim, total, trainable, as_trained(checkpoint.family, cfg.train))
    n_train = sum(x.size for x in jax.tree.leaves(trainable))
    n_frozen = sum(x.size for x in jax.tree.leaves(frozen))
    say(
        f"mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} devices, "
        f"{jax.process_count()} process(es)"
    )
    say(
        f"parameters: {n_train + n_frozen:,} total, {n_train:,} trainable ({cfg.train.mode}); "
        f"{total} steps of {cfg.global_batch} examples ({cfg.accum} micro-batches of {cfg.micro_batch})"
    )
    meta = RunMeta(
        base_checkpoint=storage.absolute(cfg.model.checkpoint),
        mode=cfg.train.mode,
        lora=cfg.lora_spec,
        scan_layers=start.model.scan_layers,
        family=checkpoint.family.name,
        config=cfg.to_json(),
    )
    setup = Setup(cfg, workdir, mesh, start.model, base, frozen, opt, total, meta, rows.image.rule)
    del start
    it = iter(dataset(rows, workers=cfg.data.workers))
    try:
        state, shardings, start = _resume(setup, ckpt, latest, it, trainable, say)
        del trainable
        return _steps(setup, ckpt, it, state, shardings, start, preemption, say)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # grain's worker processes


def _resume(
    s: Setup, ckpt: Checkpoints, latest: int | None, it: Any, trainable: Params, say: Say
) -> tuple[TrainState[jax.Array], TrainState[NamedSharding], int]:
    """(state, its shardings, first step): fresh at step 0, or the latest checkpoint restored and
    the data iterator moved to its position."""
    if latest is None:
        state, shardings = init_state(s.opt, trainable, s.mesh, s.cfg.seed)
        return state, shardings, 0
    shardings = state_shardings(s.opt, trainable, s.mesh)
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
            f"for config.model.scan_layers={s.cfg.model.scan_layers.value!r}"
        )
    it.set_state(data_state)
    say(f"resumed from {s.workdir / 'checkpoints'} at step {latest}")
    return state, shardings, int(latest)


def _restore_other_form(s: Setup, ckpt: Checkpoints, step: int, stacked: bool) -> tuple[TrainState, Any]:
    """(state, data state) of a checkpoint whose layers are in the form `stacked`, which this run's
    model does not use, restored sharded as that form's model would hold it."""
    other, family = s.model.clone(scan_layers=stacked), as_trained(family_of(s.base.config), s.cfg.train)
    trainable, _ = partition(abstract_params(other, s.mesh), s.cfg.train.mode, family)
    trainable = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, jnp.float32 if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype, sharding=x.sharding
        ),
        trainable,
    )
    opt = optimizer(s.cfg.optim, s.total, trainable, family)
    state, data_state, _ = ckpt.restore(step, abstract_state(opt, trainable, state_shardings(opt, trainable, s.mesh)))
    return state, data_state


def _steps(
    s: Setup,
    ckpt: Checkpoints,
    it: Any,  # grain's iterator: next(), get_state(), set_state()
    state: TrainState[jax.Array],
    shardings: TrainState[NamedSharding],
    start: int,
    preemption: Preemption,
    say: Say,
) -> dict:
    cfg = s.cfg
    train_step = jit_train_step(s.model, s.opt, cfg.accum, cfg.loss_chunk, s.mesh, shardings)
    logger = Logger(s.workdir, s.total, start)
    lr_at = schedule(cfg.optim.lr, s.total, cfg.optim)
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
                cfg.lora.targets,
                s.image_rule.room_of(local["pixel_values"]),
            )
            done = step + 1
            ckpt.check()  # a checkpoint write that failed stops the run now, not at its end
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
        try:
            ckpt.wait()
        finally:  # a write that failed raises here: the bar ends first, so the error starts its own line
            logger.close()
    return last
