"""A LLaVA training run as a PEFT adapter (reading runs and merging LoRA live in `vlguard_jax.checkpoints.runs`).

PEFT key names are those of transformers 5's `LlavaForConditionalGeneration` modules
(`base_model.model.model.language_model.layers.N.self_attn.q_proj.lora_A.weight`); the projector
is saved through PEFT's `modules_to_save`, so `PeftModel.from_pretrained(base, DIR)` restores it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vlguard_jax.checkpoints.runs import RunMeta
from vlguard_jax.conversion.peft_adapter import write_adapter
from vlguard_jax.errors import CheckpointError

PEFT_PREFIX = "base_model.model.model."


def _peft_module(path: tuple) -> str:
    m = re.fullmatch(r"language_model/layers_(\d+)/(self_attn|mlp)/(\w+)", "/".join(path))
    if not m:
        raise CheckpointError(f"LoRA on {'/'.join(path)}: only language-model layers can be exported to PEFT")
    return f"language_model.layers.{m[1]}.{m[2]}.{m[3]}"


def write_peft(dst: Path, flat: dict, meta: RunMeta, dtype) -> None:
    """adapter_config.json + adapter_model.safetensors (LoRA factors and the projector)."""
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
    write_adapter(dst, tensors, meta, targets, ["multi_modal_projector"])
