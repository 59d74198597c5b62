"""A training run's outputs (`workdir`) read as a model: which checkpoints are finished, the
latest one's trainable weights on top of the base checkpoint the run names, with LoRA factors kept
apart or merged into the kernels. (Writing them is checkpoints.training.)"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

from vlguard_jax import storage
from vlguard_jax.checkpoints.converted import MODEL_CONFIG, PARAMS_DIR, load_params, save_checkpoint
from vlguard_jax.errors import MissingFileError, UserError
from vlguard_jax.families import DEFAULT, family_of, load_config
from vlguard_jax.models.config import LoraSpec
from vlguard_jax.models.layers import LORA_PARAMS
from vlguard_jax.models.stacking import to_per_layer
from vlguard_jax.storage import files, orbax_s3

CHECKPOINTS = "checkpoints"
RUN_IDENTITY = "run.json"  # what the run's checkpoints are a function of (train.workdir writes it)
COMMIT_MARKER = "commit_success.txt"  # orbax's, in gs:// and s3://


def marker(workdir) -> str | None:
    """The file that marks a checkpoint's step finished in a bucket (locally, its rename does)."""
    return COMMIT_MARKER if storage.is_remote(workdir) else None


def is_finished(step_dir, done: str | None) -> bool:
    """Whether a step directory holds a finished checkpoint (`done`: the workdir's `marker`). In
    s3://, vlguard-jax used to upload checkpoints that orbax had written locally, the upload's
    `COMPLETE` last: those are finished too."""
    if done is None:
        return True
    return (step_dir / done).exists() or (orbax_s3.is_s3(step_dir) and (step_dir / storage.COMPLETE).exists())


def finished_steps(workdir) -> list[int]:
    """The steps whose checkpoints are complete, oldest first (see `marker`)."""
    root = storage.as_path(workdir) / CHECKPOINTS
    if not root.is_dir():
        return []
    done = marker(workdir)
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and is_finished(p, done))


@dataclasses.dataclass(frozen=True)
class RunMeta:
    """What every training checkpoint records beside its state (its `meta` item, JSON): written
    by checkpoints.training, read here, and nowhere else."""

    base_checkpoint: str  # absolute path or URL of the checkpoint the run started from
    mode: str  # "lora" | "full"
    lora: LoraSpec | None  # the run's LoRA (its `scale` is the one every export uses)
    scan_layers: bool  # decoder layers saved stacked [L, ...] rather than per layer
    family: str = DEFAULT.name
    config: str = "{}"  # the run's whole config, as JSON

    def to_dict(self) -> dict:
        lora = None
        if self.lora is not None:
            lora = dict(dataclasses.asdict(self.lora), targets=list(self.lora.targets))
        return {
            "base_checkpoint": self.base_checkpoint,
            "mode": self.mode,
            "scan_layers": self.scan_layers,
            "lora": lora,
            "family": self.family,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunMeta:
        """Also reads checkpoints written before `family` was recorded (all LLaVA)."""
        lora = d.get("lora")
        spec = None
        if lora:
            spec = LoraSpec(int(lora["rank"]), float(lora["alpha"]), float(lora.get("dropout", 0.0)))
            if lora.get("targets"):
                spec = dataclasses.replace(spec, targets=tuple(lora["targets"]))
        return cls(
            base_checkpoint=d.get("base_checkpoint") or "",
            mode=d.get("mode", "lora" if lora else "full"),
            lora=spec,
            scan_layers=bool(d.get("scan_layers", False)),
            family=d.get("family", DEFAULT.name),
            config=d.get("config", "{}"),
        )

    def base(self) -> Path:
        return storage.as_path(self.base_checkpoint or ".")


def read_meta(workdir, step: int) -> RunMeta:
    meta_file = storage.as_path(workdir) / CHECKPOINTS / str(step) / "meta" / "metadata"
    return RunMeta.from_dict(json.loads(meta_file.read_text()) if meta_file.exists() else {})


def _state_dir(workdir, step: int) -> epath.Path:
    return epath.Path(orbax_s3.orbax_path(storage.as_path(workdir) / CHECKPOINTS / str(step))) / "state"


def params_metadata(workdir, step: int) -> dict[tuple, Any]:
    """The shapes and dtypes of a checkpoint's trained parameters, flat by path, as saved (a
    scanned run's decoder layers stacked); no tensor is read."""
    meta = ocp.PyTreeCheckpointHandler().metadata(_state_dir(workdir, step)).tree
    return traverse_util.flatten_dict(meta["params"])


def read_params(workdir, step: int, placement=None) -> dict[tuple, Any]:
    """A checkpoint's trained parameters, flat by path, as saved; the optimizer state is never
    read. `placement(path, metadata)` gives each leaf's sharding (default: this host's first
    device), so a mesh gets each restored straight into its shard."""
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    place = placement or (lambda path, m: dev)
    flat = {
        k: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=place(k, m))
        for k, m in params_metadata(workdir, step).items()
    }
    target = {"params": traverse_util.unflatten_dict(flat)}
    args = ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True
    )
    restored = ocp.PyTreeCheckpointHandler().restore(_state_dir(workdir, step), args=args)
    return traverse_util.flatten_dict(restored["params"])


def latest_step(workdir) -> int:
    steps = finished_steps(workdir)
    if not steps:
        raise MissingFileError(
            f"{workdir}: no finished training checkpoint under {storage.as_path(workdir) / CHECKPOINTS}"
        )
    return steps[-1]


def read_latest(workdir, step: int | None = None) -> tuple[int, Any, RunMeta]:
    """(step, state, meta) of a training checkpoint, read onto this host's first device whatever
    topology wrote it (for export and inspection)."""
    if step is None:
        step = latest_step(workdir)
    path = _state_dir(workdir, step)
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    # The item's handler, not a Checkpointer: the step-level metadata file a Checkpointer looks for
    # belongs to the step directory (CheckpointManager writes it there), and its absence warns.
    handler = ocp.StandardCheckpointHandler()
    meta_tree = handler.metadata(path)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev), meta_tree)
    state = handler.restore(path, args=ocp.args.StandardRestore(target))
    return step, state, read_meta(workdir, step)


class RunError(UserError, ValueError):
    """A training run that cannot be read; the message names the directory."""


def is_run(path) -> bool:
    path = storage.as_path(path)
    return (path / CHECKPOINTS).is_dir() and not (path / MODEL_CONFIG).exists()


def run_base(workdir) -> Path:
    """The base checkpoint a run names, from its latest checkpoint's metadata (no tensor read)."""
    steps = finished_steps(workdir)
    if not steps:
        raise RunError(f"{workdir}: no finished training checkpoint under {storage.as_path(workdir) / CHECKPOINTS}")
    return existing_base(workdir, read_meta(workdir, steps[-1]))


def existing_base(workdir, meta: RunMeta) -> Path:
    """The base checkpoint `meta` names, which must still exist."""
    base = meta.base()
    if not (base / MODEL_CONFIG).exists():
        raise RunError(
            f"{workdir}: its base checkpoint {base} is missing; the run's LoRA and projector weights need it"
        )
    identity = storage.as_path(workdir) / RUN_IDENTITY
    want = json.loads(identity.read_text()).get("base_checkpoint") if identity.exists() else None
    if want and (got := files.fingerprint(base)) != want:
        raise RunError(
            f"{workdir}: its base checkpoint {base} is not the one the run trained on (fingerprint {got}, "
            f"{RUN_IDENTITY} says {want}): it was re-converted or replaced since. The run's weights apply "
            "to that one only: put it back, or train again"
        )
    return base


def load_run(workdir, step: int | None = None) -> tuple[Path, Any, dict, RunMeta]:
    """(base checkpoint dir, config, flat params {path tuple: np.ndarray} incl. LoRA factors, RunMeta)."""
    if step is None:
        step = latest_step(workdir)
    meta = read_meta(workdir, step)
    base = existing_base(workdir, meta)
    config = load_config(base / MODEL_CONFIG)
    flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(load_params(base / PARAMS_DIR)).items()}
    # A run with scanned layers saves them stacked; everything downstream reads them per layer.
    params = traverse_util.unflatten_dict(read_params(workdir, step))
    trained = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(to_per_layer(params)).items()}
    for k in trained:
        if k[-1] not in LORA_PARAMS and k not in flat:
            raise RunError(f"{workdir}: step {step} holds {'/'.join(k)}, which the base checkpoint lacks")
    flat.update(trained)
    return base, config, flat, meta


def has_lora(flat: dict) -> bool:
    return any(k[-1] == "lora_a" for k in flat)


def lora_of(workdir, meta: RunMeta) -> LoraSpec:
    if meta.lora is None:
        raise RunError(f"{workdir}: holds LoRA factors, but its checkpoint records no LoRA settings")
    return meta.lora


def merge_lora(flat: dict, scale: float) -> dict:
    """kernel + scale * A @ B for every LoRA'd layer, in float32 then back to the kernel's dtype."""
    out = {k: v for k, v in flat.items() if k[-1] not in LORA_PARAMS}
    for k, a in flat.items():
        if k[-1] != "lora_a":
            continue
        parent = k[:-1]
        b = flat[parent + ("lora_b",)]
        kernel = out[parent + ("kernel",)]
        merged = kernel.astype(np.float32) + scale * (a.astype(np.float32) @ b.astype(np.float32))
        out[parent + ("kernel",)] = merged.astype(kernel.dtype)
    return out


def load_merged(workdir, step: int | None = None) -> tuple[Path, Any, dict, RunMeta]:
    """`load_run` with any LoRA factors folded into their kernels; the config then carries no LoRA
    of its own (a MiniGPT-v2 base converted with its factors kept)."""
    base, config, flat, meta = load_run(workdir, step)
    if has_lora(flat):
        flat = merge_lora(flat, lora_of(workdir, meta).scale)
        if getattr(config, "lora", None) is not None:
            config = dataclasses.replace(config, lora=None)
    return base, config, flat, meta


def save_run_checkpoint(workdir, dst, step: int | None = None) -> Path:
    """The run's weights (LoRA merged) as a plain checkpoint directory, with the base's tokenizer
    and processor files: usable as the base of another run, or by any loader."""
    base, config, flat, _ = load_merged(workdir, step)
    dtype = flat[family_of(config).embed].dtype
    params = traverse_util.unflatten_dict(
        {k: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v for k, v in flat.items()}
    )
    return save_checkpoint(dst, config, params, side_files_from=base)
