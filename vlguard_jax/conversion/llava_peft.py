"""A LLaVA training run as a PEFT adapter (reading runs and merging LoRA live in `vlguard_jax.checkpoints.runs`).

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
from safetensors.numpy import save_file

from vlguard_jax.checkpoints.converted import hub_source
from vlguard_jax.checkpoints.runs import RunMeta
from vlguard_jax.errors import CheckpointError

PEFT_PREFIX = "base_model.model.model."


def _peft_module(path: tuple) -> str:
    m = re.fullmatch(r"language_model/layers_(\d+)/(self_attn|mlp)/(\w+)", "/".join(path))
    if not m:
        raise CheckpointError(f"LoRA on {'/'.join(path)}: only language-model layers can be exported to PEFT")
    return f"language_model.layers.{m[1]}.{m[2]}.{m[3]}"


def write_peft(dst: Path, flat: dict, meta: RunMeta, dtype) -> None:
    """adapter_config.json + adapter_model.safetensors (LoRA factors and the projector)."""
    lora = meta.lora
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
    if not targets or lora is None:
        raise CheckpointError("--lora peft: this run has no LoRA weights (a full fine-tuning run?); use --lora merge")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        # A regex, so the CLIP tower's own q/k/v_proj are not matched.
        "target_modules": r".*language_model.*\.(" + "|".join(sorted(targets)) + ")",
        "modules_to_save": ["multi_modal_projector"],
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "base_model_name_or_path": meta.base_checkpoint or None,
    }
    # A base converted from the Hub is named by its repo and commit, which peft loads from anywhere.
    source = hub_source(meta.base()) if meta.base_checkpoint else None
    if source is not None:
        config.update(base_model_name_or_path=source["id"], revision=source["revision"])
    (dst / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, os.fspath(dst / "adapter_model.safetensors"), metadata={"format": "pt"})
