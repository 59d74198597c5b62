"""Config checks, before anything is loaded: every value's type and range, and misspelt keys with
the key that was meant. Each failure is a `ConfigError` naming `config.KEY`."""

from __future__ import annotations

import math

from vlguard_jax import storage
from vlguard_jax.data.config import AUTO_TEMPLATE
from vlguard_jax.data.mixture import RECIPES
from vlguard_jax.errors import ConfigError, InputError
from vlguard_jax.families import FAMILIES
from vlguard_jax.flags import COMPUTE_DTYPES
from vlguard_jax.models.config import LORA_TARGETS
from vlguard_jax.models.config import SETTINGS as STACKING
from vlguard_jax.models.llama import REMAT_POLICIES

ATTENTION = ("auto", "xla", "per_head", "cudnn")


def _int(low=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"{v!r} is not an integer"
        if low is not None and v < low:
            return f"{v} is below {low}"

    return check


def _number(low=None, high=None, low_open=False, high_open=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"{v!r} is not a finite number"
        if low is not None and (v < low or (low_open and v == low)):
            return f"{v} is {'not above' if low_open else 'below'} {low}"
        if high is not None and (v > high or (high_open and v == high)):
            return f"{v} is {'not below' if high_open else 'above'} {high}"

    return check


def _one_of(choices):
    return lambda v: None if v in choices else f"{v!r} is not one of {sorted(choices)}"


def _text(v):
    return None if isinstance(v, str) and v.strip() else f"{v!r} is not a non-empty path"


def _workdir(v):
    if problem := _text(v):
        return problem
    try:
        storage.writable(v)
    except InputError as e:
        return str(e)


def _flag(v):
    return None if isinstance(v, bool) else f"{v!r} is not true or false"


def _total_steps(v):
    return _int()(v) or (None if v == -1 or v >= 1 else f"{v} is neither -1 (use epochs) nor a positive count")


def _mesh(v):
    v = tuple(v) if isinstance(v, (tuple, list)) else v
    if not isinstance(v, tuple) or len(v) != 3 or any(isinstance(x, bool) or not isinstance(x, int) for x in v):
        return f"{v!r} is not three integers (data, fsdp, tensor)"
    if any(x == 0 or x < -1 for x in v) or list(v).count(-1) > 1:
        return f"{v!r}: each axis is a positive size, or -1 (the remaining devices) for one axis"


def _targets(v):
    bad = [t for t in v if t not in LORA_TARGETS] if isinstance(v, (tuple, list)) and v else [v]
    return f"{bad[0]!r} is not a LoRA target (one of {list(LORA_TARGETS)})" if bad else None


RULES = {
    "workdir": _workdir,
    "seed": _int(),
    "epochs": _int(1),
    "total_steps": _total_steps,
    "checkpoint_every": _int(0),
    "keep_checkpoints": _int(1),
    "log_every": _int(1),
    "global_batch": _int(1),
    "micro_batch": _int(1),
    "loss_chunk": _int(1),
    "model.checkpoint": _text,
    "model.dtype": _one_of(COMPUTE_DTYPES),
    "model.attn_impl": _one_of(ATTENTION),
    "model.remat": _one_of(tuple(REMAT_POLICIES)),
    "model.scan_layers": _one_of(STACKING),
    "train.mode": _one_of(("lora", "full")),
    "train.freeze_projector": _flag,
    "lora.rank": _int(1),
    "lora.alpha": _number(0, low_open=True),
    "lora.dropout": _number(0, 1, high_open=True),
    "lora.targets": _targets,
    "optim.lr": _number(0, low_open=True),
    "optim.projector_lr": _number(0),
    "optim.weight_decay": _number(0),
    "optim.warmup_ratio": _number(0, 1),
    "optim.grad_clip": _number(0),
    "optim.b1": _number(0, 1, high_open=True),
    "optim.b2": _number(0, 1, high_open=True),
    "optim.eps": _number(0, low_open=True),
    "optim.schedule": _one_of(("hf", "lavis")),
    "optim.warmup_steps": _int(0),
    "optim.iters_per_epoch": _int(0),
    "optim.max_epoch": _int(0),
    "optim.warmup_start_lr": _number(0),
    "optim.min_lr": _number(0),
    "optim.decay_matrices_only": _flag,
    "mesh.shape": _mesh,
    "data.recipe": _one_of(RECIPES),
    "data.max_length": _int(2),
    "data.template": _one_of(
        (AUTO_TEMPLATE, *dict.fromkeys(t for f in FAMILIES.values() for t in f.training_templates))
    ),
    "data.pad_image": _flag,
    "data.pad_to": _one_of(("bucket", "max_length")),
    "data.bucket": _int(1),
    "data.group_by_modality": _flag,
    "data.workers": _int(0),
    "data.on_bad_record": _one_of(("raise", "skip")),
    "data.helpful_samples": _int(1),
    "data.helpful_seed": _int(),
    "data.convert_seed": _int(),
    "data.max_image_pixels": _int(1),
}
# The files each recipe reads.
SOURCES = {"posthoc": ("vlguard", "llava"), "mixed": ("vlguard", "llava"), "vlguard": ("vlguard",), "llava": ("llava",)}


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check(cfg) -> None:
    """Raise ConfigError for the first value that cannot run; `cfg` is a ConfigDict or the same
    nested dict."""
    for key, rule in RULES.items():
        try:
            value = _get(cfg, key)
        except (KeyError, AttributeError):
            continue  # a config built without this key keeps the code's default
        problem = rule(value)
        if problem:
            raise ConfigError(f"config.{key}: {problem}")
    batch, micro, recipe = cfg["global_batch"], cfg["micro_batch"], cfg["data"]["recipe"]
    if batch % micro:
        raise ConfigError(
            f"config.global_batch: {batch} is not a multiple of config.micro_batch "
            f"{micro} (the accumulation steps must be whole)"
        )
    for source in SOURCES[recipe]:
        for key in (f"data.{source}", f"data.{source}_images"):
            problem = _text(_get(cfg, key))
            if problem:
                raise ConfigError(f"config.{key}: {problem} (the {recipe} recipe reads it)")
