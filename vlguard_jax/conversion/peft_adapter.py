"""A PEFT LoRA adapter directory (`adapter_config.json`, `adapter_model.safetensors`), written for
any family's exporter: it gives the tensors under transformers' module names, the LoRA'd module
names and the modules saved whole; the run's LoRA settings and its base come from its meta."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from vlguard_jax.checkpoints.converted import hub_source
from vlguard_jax.checkpoints.runs import RunMeta
from vlguard_jax.errors import CheckpointError


def write_adapter(
    dst: Path, tensors: dict[str, np.ndarray], meta: RunMeta, targets: set[str], modules_to_save: list[str]
) -> None:
    """LoRA on the decoder's `targets` only: the regex names the decoder (`language_model`), so a
    vision tower's own projections of the same names are not matched."""
    lora = meta.lora
    if not targets or lora is None:
        raise CheckpointError("--lora peft: this run has no LoRA weights (a full fine-tuning run?); use --lora merge")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": r".*language_model.*\.(" + "|".join(sorted(targets)) + ")",
        "modules_to_save": modules_to_save or None,
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
