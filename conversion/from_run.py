"""Reading a training run (a `workdir`) for export: its latest checkpoint's trainable weights on
top of the base checkpoint it names, LoRA merged into the kernels or written as a PEFT adapter.

PEFT key names are those of transformers 5's `LlavaForConditionalGeneration` modules
(`base_model.model.model.language_model.layers.N.self_attn.q_proj.lora_A.weight`); the projector
is saved through PEFT's `modules_to_save`, so `PeftModel.from_pretrained(base, DIR)` restores it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
from flax import traverse_util
from safetensors.numpy import save_file

from conversion.reader import CheckpointError
from vlguard_jax.checkpoint import PARAMS_DIR, load_params
from vlguard_jax.loading import MODEL_CONFIG
from vlguard_jax.models.config import LlavaConfig

PEFT_PREFIX = "base_model.model.model."
LORA_KEYS = ("lora_a", "lora_b")


def is_run(path) -> bool:
    return (Path(path) / "checkpoints").is_dir() and not (Path(path) / MODEL_CONFIG).exists()


def load_run(workdir, step: int | None = None):
    """(base checkpoint dir, config, flat params {path tuple: np.ndarray} incl. LoRA factors, meta)."""
    from vlguard_jax.train.checkpoints import read_latest
    step, state, meta = read_latest(workdir, step)
    base = Path(meta.get("base_checkpoint", ""))
    if not (base / MODEL_CONFIG).exists():
        raise CheckpointError(f"{workdir}: its base checkpoint {base} is missing; the run's LoRA and projector "
                              "weights need it")
    config = LlavaConfig.load(base / MODEL_CONFIG)
    flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(load_params(base / PARAMS_DIR)).items()}
    trained = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(state["params"]).items()}
    for k, v in trained.items():
        if k[-1] not in LORA_KEYS and k not in flat:
            raise CheckpointError(f"{workdir}: step {step} holds {'/'.join(k)}, which the base checkpoint lacks")
    flat.update(trained)
    meta["step"] = step
    return base, config, flat, meta


def lora_scale(meta) -> float:
    lora = meta.get("lora") or {}
    return float(lora["alpha"]) / int(lora["rank"])


def merge_lora(flat: dict, scale: float) -> dict:
    """kernel + scale * A @ B for every LoRA'd layer, in float32 then back to the kernel's dtype."""
    out = {k: v for k, v in flat.items() if k[-1] not in LORA_KEYS}
    for k, a in flat.items():
        if k[-1] != "lora_a":
            continue
        parent = k[:-1]
        b = flat[parent + ("lora_b",)]
        kernel = out[parent + ("kernel",)]
        merged = kernel.astype(np.float32) + scale * (a.astype(np.float32) @ b.astype(np.float32))
        out[parent + ("kernel",)] = merged.astype(kernel.dtype)
    return out


def _peft_module(path: tuple) -> str:
    m = re.fullmatch(r"language_model/layers_(\d+)/(self_attn|mlp)/(\w+)", "/".join(path))
    if not m:
        raise CheckpointError(f"LoRA on {'/'.join(path)}: only language-model layers can be exported to PEFT")
    return f"language_model.layers.{m[1]}.{m[2]}.{m[3]}"


def write_peft(dst: Path, flat: dict, meta: dict, dtype) -> None:
    """adapter_config.json + adapter_model.safetensors (LoRA factors and the projector)."""
    lora = meta["lora"]
    tensors, targets = {}, set()
    for k, a in flat.items():
        if k[-1] == "lora_a":
            name = _peft_module(k[:-1])
            targets.add(k[-2])
            tensors[PEFT_PREFIX + name + ".lora_A.weight"] = np.ascontiguousarray(a.T.astype(dtype))
            b = flat[k[:-1] + ("lora_b",)]
            tensors[PEFT_PREFIX + name + ".lora_B.weight"] = np.ascontiguousarray(b.T.astype(dtype))
        elif k[0] == "projector":
            key = f"{PEFT_PREFIX}multi_modal_projector.{k[1]}.{'weight' if k[2] == 'kernel' else 'bias'}"
            tensors[key] = np.ascontiguousarray((a.T if k[2] == "kernel" else a).astype(dtype))
    if not targets:
        raise CheckpointError("--lora peft: this run has no LoRA weights (a full fine-tuning run?); use --lora merge")
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": int(lora["rank"]), "lora_alpha": float(lora["alpha"]),
        "lora_dropout": float(lora["dropout"]),
        # A regex, so the CLIP tower's own q/k/v_proj are not matched.
        "target_modules": r".*language_model.*\.(" + "|".join(sorted(targets)) + ")",
        "modules_to_save": ["multi_modal_projector"], "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "base_model_name_or_path": meta.get("base_checkpoint"),
    }
    (dst / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, os.fspath(dst / "adapter_model.safetensors"), metadata={"format": "pt"})
