"""`vlguard-convert flax-to-hf` for Qwen2.5-VL (the family's `hf_exporter`): a checkpoint, or a
run's latest, in the Hub's layout (`config.json` flat with `rope_scaling: {type: mrope}`, tensors
named `visual.` and `model.`, the tokenizer, chat template and processor files), which
transformers loads; a LoRA run merged (`--lora merge`) or as a PEFT adapter (`--lora peft`: the
decoder's factors and the merger, through `modules_to_save`). A round trip is bit-exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flax import traverse_util

from vlguard_jax.checkpoints import runs
from vlguard_jax.checkpoints.converted import copy_side_files
from vlguard_jax.conversion import layouts
from vlguard_jax.conversion.flax_to_hf import export_ref, write_safetensors
from vlguard_jax.conversion.hf_to_flax import DTYPES
from vlguard_jax.conversion.peft_adapter import write_adapter
from vlguard_jax.conversion.qwen2_5_vl import MODEL_TYPE, torch_name
from vlguard_jax.errors import CheckpointError, InputError
from vlguard_jax.models.qwen2_5_vl import Qwen2_5_VLConfig
from vlguard_jax.storage.files import atomic_dir

PEFT_PREFIX = "base_model.model.model."  # transformers 5's module names under PEFT


def hub_config(config: Qwen2_5_VLConfig, dtype: str) -> dict:
    """The Hub's flat `config.json` for `config`."""
    t, v = config.text, config.vision
    eos = list(t.eos_token_id) if isinstance(t.eos_token_id, tuple) else t.eos_token_id
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": MODEL_TYPE,
        "vocab_size": t.vocab_size,
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads,
        "hidden_act": t.hidden_act,
        "rms_norm_eps": t.rms_norm_eps,
        "rope_theta": t.rope_theta,
        "rope_scaling": {"type": "mrope", "mrope_section": list(t.mrope_section or ())},
        "max_position_embeddings": t.max_position_embeddings,
        "use_sliding_window": False,
        "tie_word_embeddings": t.tie_word_embeddings,
        "bos_token_id": t.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": t.pad_token_id,
        "image_token_id": config.image_token_index,
        "vision_start_token_id": config.vision_start_token_id,
        "vision_end_token_id": config.vision_end_token_id,
        "torch_dtype": dtype,
        "vision_config": {
            "depth": v.depth,
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_heads": v.num_heads,
            "in_chans": v.in_channels,
            "patch_size": v.patch_size,
            "temporal_patch_size": v.temporal_patch_size,
            "spatial_merge_size": v.spatial_merge_size,
            "window_size": v.window_size,
            "fullatt_block_indexes": list(v.fullatt_block_indexes),
            "out_hidden_size": v.out_hidden_size,
            "hidden_act": v.hidden_act,
        },
    }


def torch_state(config: Qwen2_5_VLConfig, params, dtype) -> dict[str, np.ndarray]:
    """Our parameter tree -> {Hub name: array} (PyTorch layouts, in `dtype`)."""
    v = config.vision
    patch_shape = (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    out = {}
    for path, array in traverse_util.flatten_dict(params, sep="/").items():
        name, transform = torch_name(path, "hub")
        out[name] = np.ascontiguousarray(layouts.to_torch(np.asarray(array), transform, patch_shape).astype(dtype))
    return out


def _write(
    src: Path, dst: Path, config: Qwen2_5_VLConfig, params, dtype: str | None, max_shard_bytes: int, overwrite
) -> Qwen2_5_VLConfig:
    """`params` in the Hub's layout (dtype None: the embedding's own); side files from `src`."""
    dtype = dtype or np.asarray(params["language_model"]["embed_tokens"]).dtype.name
    state = torch_state(config, params, np.dtype(DTYPES[dtype]))
    with atomic_dir(dst, overwrite) as tmp:
        write_safetensors(state, tmp, max_shard_bytes)
        (tmp / "config.json").write_text(json.dumps(hub_config(config, dtype), indent=2))
        copy_side_files(src, tmp)
    return config


def write_peft(dst: Path, flat: dict, meta: runs.RunMeta, dtype) -> None:
    """adapter_config.json + adapter_model.safetensors: the decoder's LoRA factors, the merger."""
    tensors, targets = {}, set()
    for k, a in flat.items():
        if k[-1] == "lora_a":
            if k[0] != "language_model":
                raise CheckpointError(f"LoRA on {'/'.join(k[:-1])}: only decoder layers export to PEFT")
            name = torch_name("/".join(k[:-1]) + "/kernel", "nested")[0].removeprefix("model.")[: -len(".weight")]
            targets.add(k[-2])
            tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(a.T.astype(dtype))
            tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(
                flat[k[:-1] + ("lora_b",)].T.astype(dtype)
            )
        elif k[0] == "merger":
            name, transform = torch_name("/".join(k), "nested")
            tensors[PEFT_PREFIX + name.removeprefix("model.")] = np.ascontiguousarray(
                layouts.to_torch(np.asarray(a), transform).astype(dtype)
            )
    write_adapter(dst, tensors, meta, targets, ["merger"] if any(k[0] == "merger" for k in flat) else [])


def export(
    ref, dst: Path, dtype: str | None, max_shard_bytes: int, lora: str | None, overwrite: bool
) -> Qwen2_5_VLConfig:
    """Write the checkpoint or run `ref` (resolved) to DST (see the module doc)."""
    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")

    def write(src, dst, config, params, dtype):
        return _write(src, dst, config, params, dtype, max_shard_bytes, overwrite)

    return export_ref(ref, dst, dtype, lora, overwrite, write, write_peft)
