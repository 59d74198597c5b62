"""LLaVA's Hugging Face writer (the family's `hf_exporter`): a llava-hf directory that
`LlavaForConditionalGeneration.from_pretrained(DIR)` and `AutoProcessor.from_pretrained(DIR)` load.
Key names are the llava-hf hub names, which transformers 4.x and 5.x both load; `--lora peft`
writes LLaVA-HF's PEFT names (`conversion.llava_peft`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

# The PIL processor: the one transformers falls back to without torchvision, saved as CLIPImageProcessor.
from transformers import AutoTokenizer, CLIPImageProcessorPil, LlavaProcessor

from vlguard_jax.checkpoints.converted import copy_side_files
from vlguard_jax.conversion import layouts, llava, llava_peft
from vlguard_jax.conversion.flax_to_hf import MAX_SHARD_BYTES, export_ref, write_safetensors
from vlguard_jax.conversion.hf_to_flax import DTYPES
from vlguard_jax.errors import InputError
from vlguard_jax.models.llava_config import LlavaConfig
from vlguard_jax.storage.files import atomic_dir


def export(
    ref, dst: Path, dtype: str | None, max_shard_bytes: int = MAX_SHARD_BYTES, lora=None, overwrite=False
) -> Any:
    """A resolved LLaVA checkpoint or run `ref` into DST (conversion.flax_to_hf's contract)."""

    def write(src, dst, config, params, dtype):
        return _write(src, dst, config, params, dtype, max_shard_bytes, overwrite)

    return export_ref(ref, dst, dtype, lora, overwrite, write, llava_peft.write_peft)


def torch_state(config: LlavaConfig, params, dtype) -> dict[str, np.ndarray]:
    """Our parameter tree -> {hub name: array} (PyTorch layouts, in `dtype`)."""
    v = config.vision
    patch_shape = (v.hidden_size, v.num_channels, v.patch_size, v.patch_size)
    out = {}
    for path, array in traverse_util.flatten_dict(params, sep="/").items():
        name, transform = llava.torch_name(path, llava.HUB)
        out[name] = np.ascontiguousarray(layouts.to_torch(np.asarray(array), transform, patch_shape).astype(dtype))
    return out


def _pad_vocab(config: LlavaConfig, state: dict) -> LlavaConfig:
    """transformers looks the image token up in the embedding table, so the table must cover it.
    Checkpoints converted from the original LLaVA put `<image>` one past the vocabulary: add
    rows (zeros; the image rows of the embedding are always overwritten by image features)."""
    t = config.text
    if config.image_token_index < t.vocab_size:
        return config
    new = -(-(config.image_token_index + 1) // 64) * 64
    for key in (llava.HUB["lm"] + "embed_tokens.weight", llava.HUB["lm_head"] + "weight"):
        if key in state:
            a = state[key]
            state[key] = np.concatenate([a, np.zeros((new - a.shape[0], a.shape[1]), a.dtype)])
    return config.replace(text=dataclasses.replace(t, vocab_size=new))


def write_side_files(src: Path, dst: Path, config: LlavaConfig, dtype_name: str) -> None:
    hf = config.to_hf()
    hf["dtype"] = dtype_name
    (dst / "config.json").write_text(json.dumps(hf, indent=2))
    copy_side_files(src, dst)
    if not (dst / "generation_config.json").exists():
        t = config.text
        eos = list(t.eos_token_id) if isinstance(t.eos_token_id, tuple) else t.eos_token_id
        (dst / "generation_config.json").write_text(
            json.dumps({"bos_token_id": t.bos_token_id, "eos_token_id": eos, "pad_token_id": t.pad_token_id}, indent=2)
        )
    # Read from the copies in DST: the source may be in a bucket.
    if (dst / "tokenizer_config.json").exists() and (dst / "preprocessor_config.json").exists():
        processor = LlavaProcessor(
            image_processor=CLIPImageProcessorPil.from_pretrained(dst, local_files_only=True),
            tokenizer=AutoTokenizer.from_pretrained(dst, local_files_only=True),
            patch_size=config.vision.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            num_additional_image_tokens=1,
        )
        processor.save_pretrained(dst)


def _write(src: Path, dst: Path, config: LlavaConfig, params, dtype, max_shard_bytes, overwrite) -> LlavaConfig:
    """`params` -> a llava-hf directory; side files (tokenizer, processor) come from `src`."""
    if dtype is None:
        np_dtype = np.asarray(next(iter(traverse_util.flatten_dict(params).values()))).dtype
        dtype = np_dtype.name
    elif dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    state = torch_state(config, params, np.dtype(DTYPES[dtype]))
    del params
    config = _pad_vocab(config, state)
    with atomic_dir(dst, overwrite) as tmp:
        write_safetensors(state, tmp, max_shard_bytes)
        write_side_files(src, tmp, config, dtype)
    return config
