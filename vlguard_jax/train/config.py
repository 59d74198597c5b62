"""The training run's settings, typed and frozen: `RunConfig` and its blocks. Their field defaults
are the defaults (train/defaults.py builds the command line's ConfigDict from them); values follow
VLGuard (ICML 2024) and LLaVA-1.5's fine-tuning scripts.

A config file's ConfigDict is checked once (train/validate.py) and turned into a `RunConfig` where
the run starts (`RunConfig.from_config`); everything below `train.run` reads the typed form.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections

from vlguard_jax.data.config import DataConfig
from vlguard_jax.errors import ConfigError
from vlguard_jax.models.config import DEFAULT_SCAN, LORA_TARGETS, LoraSpec, ScanLayers


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    checkpoint: str = ""  # a converted checkpoint (conversion.hf_to_flax, conversion.assemble)
    dtype: str = "bfloat16"  # compute dtype, and the dtype frozen weights are kept in
    attn_impl: str = "auto"  # auto | xla | per_head | cudnn
    remat: str = "full"  # per decoder layer: none | full | dots | dots_all
    scan_layers: ScanLayers = DEFAULT_SCAN  # auto: one scanned layer from 16 layers (models.stacking)


@dataclasses.dataclass(frozen=True)
class ModeConfig:
    mode: str = "lora"  # lora | full (the vision tower is always frozen)
    # The family's projectors (LLaVA's, MiniGPT-v2's llama_proj, Qwen2.5-VL's merger) stay
    # frozen too: LLaMA-Factory's freeze_multi_modal_projector, its default for Qwen2-VL.
    freeze_projector: bool = False


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int = 128
    alpha: float = 256.0
    dropout: float = 0.05
    targets: tuple[str, ...] = LORA_TARGETS

    def spec(self) -> LoraSpec:
        return LoraSpec(self.rank, self.alpha, self.dropout, self.targets)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW per parameter group (train.state.optimizer), with a learning-rate schedule:

    - "hf" (LLaVA's, through the HF Trainer): linear warmup from 0 over ceil(warmup_ratio * steps)
      steps, then cosine to 0 at the last step.
    - "lavis" (MiniGPT-4's LinearWarmupCosineLRScheduler, exactly): with e = t // iters_per_epoch
      and i = t % iters_per_epoch, while t < warmup the rate is min(peak, warmup_start_lr +
      (peak - warmup_start_lr) i / warmup) (their ramp counts the step within the epoch), then
      min_lr + (peak - min_lr) (1 + cos(pi t / (max_epoch x iters_per_epoch))) / 2; t counts from
      the run's first step. `iters_per_epoch` 0 is the run's steps and `max_epoch` 0 is 1, so the
      cosine spans the run; `warmup_steps` 0 takes ceil(warmup_ratio x that span).
    """

    lr: float = 2e-4
    projector_lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03  # "hf"; "lavis" where warmup_steps is 0
    grad_clip: float = 1.0  # global-norm clipping; 0 = off
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    schedule: str = "hf"  # hf | lavis
    warmup_steps: int = 0  # "lavis"
    warmup_start_lr: float = 0.0  # "lavis"
    min_lr: float = 0.0  # "lavis"
    iters_per_epoch: int = 0  # "lavis": the scheduler's epoch; 0 = the run's steps
    max_epoch: int = 0  # "lavis": the cosine spans max_epoch x iters_per_epoch; 0 = 1
    decay_matrices_only: bool = False  # weight decay on weight matrices only, not biases or norms (LAVIS's rule)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    shape: tuple[int, int, int] = (1, -1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run: where it writes, how long, in which batches, and the blocks."""

    workdir: str = ""
    seed: int = 0
    epochs: int = 3
    total_steps: int = -1  # > 0 overrides epochs
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    global_batch: int = 128
    micro_batch: int = 16  # rows per accumulation step (global); global_batch / micro_batch steps
    loss_chunk: int = 512  # sequence positions per lm_head chunk in the loss
    allow_resume_changes: bool = False  # resume a workdir whose run had another base, data or settings
    model: ModelConfig = ModelConfig()
    train: ModeConfig = ModeConfig()
    lora: LoraConfig = LoraConfig()
    optim: OptimConfig = OptimConfig()
    mesh: MeshConfig = MeshConfig()
    data: DataConfig = DataConfig()

    @property
    def accum(self) -> int:
        """Micro-batches per step."""
        return self.global_batch // self.micro_batch

    @property
    def lora_spec(self) -> LoraSpec | None:
        """The LoRA the run trains, or None for full fine-tuning."""
        return self.lora.spec() if self.train.mode == "lora" else None

    @classmethod
    def from_config(cls, cfg: Any) -> RunConfig:
        """From a ConfigDict or nested dict, already checked (train/validate.py). A key no block
        has is a ConfigError naming it; a config file's own extra blocks (the demo's `demo`) are
        left to the command that reads them."""
        values = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        names = {f.name for f in dataclasses.fields(cls)}
        return _build(cls, {k: v for k, v in values.items() if k in names or not isinstance(v, dict)}, "")

    def to_config(self) -> ml_collections.ConfigDict:
        """The ConfigDict a config file's `get_config()` returns, `--config.KEY` overrides apply to."""
        return ml_collections.ConfigDict(self.to_dict())

    def to_dict(self) -> dict:
        """Nested plain values (enums as their names, tuples as tuples), as the ConfigDict holds them."""
        return _plain(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _build(cls: Any, values: dict, prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        block = f"config.{prefix[:-1]}" if prefix else "config"
        raise ConfigError(f"config.{prefix}{unknown[0]}: no such setting; those of {block} are {sorted(fields)}")
    defaults = cls()
    out = {}
    for name, value in values.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            out[name] = _build(type(default), dict(value), f"{prefix}{name}.")
        elif isinstance(default, ScanLayers):
            out[name] = ScanLayers.of(value)
        elif isinstance(default, tuple):
            out[name] = tuple(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            out[name] = float(value)
        else:
            out[name] = value
    return cls(**out)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, ScanLayers):
        return obj.value
    return obj
