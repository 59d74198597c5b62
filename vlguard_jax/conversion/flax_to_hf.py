"""`python -m conversion.flax_to_hf --src CKPT|WORKDIR --dst DIR [--dtype ...] [--lora merge|peft]`

Writes a vlguard-jax checkpoint, or the latest checkpoint of a training run (a `workdir`), as a
Hugging Face directory in its family's layout (`Family.hf_exporter`: `conversion.flax_to_llava`,
`conversion.flax_to_qwen2_5_vl`): sharded safetensors with an index, `config.json`,
`generation_config.json`, the tokenizer and the processor files, so that transformers'
`from_pretrained` loads it. The steps every family's writer shares are here.

For a LoRA run, `--lora merge` folds the adapters into the weights (a full model) and `--lora
peft` writes a PEFT adapter directory (LoRA factors and projector) for the base model instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util
from safetensors.numpy import save_file

# The PIL processor: the one transformers falls back to without torchvision, saved as CLIPImageProcessor.
from vlguard_jax import storage
from vlguard_jax.checkpoints import runs
from vlguard_jax.checkpoints.converted import MODEL_CONFIG, PARAMS_DIR, load_params
from vlguard_jax.checkpoints.ref import resolve_checkpoint
from vlguard_jax.conversion.commands import parse
from vlguard_jax.conversion.hf_to_flax import DTYPES
from vlguard_jax.errors import CheckpointError, InputError, cli
from vlguard_jax.families import build_model, family_of
from vlguard_jax.models import abstract_params
from vlguard_jax.models.layers import LORA_PARAMS
from vlguard_jax.storage.files import atomic_dir, check_output

MAX_SHARD_BYTES = 4 << 30


def write_safetensors(state: dict, dst: Path, max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    shards, current, size = [], {}, 0
    for name, a in state.items():
        if current and size + a.nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = a
        size += a.nbytes
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], os.fspath(dst / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.fspath(dst / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    total = sum(a.nbytes for a in state.values())
    (dst / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )


def check_shapes(src: Path, config, flat: dict) -> None:
    """Every tensor has the shape the config gives it (LoRA factors: their kernel's in and out),
    and none is missing or extra: a checkpoint whose config disagrees with its weights is refused."""
    want: dict[tuple, Any] = traverse_util.flatten_dict(abstract_params(build_model(config)))
    for key, spec in want.items():
        if key not in flat:
            raise CheckpointError(f"{src}: tensor {'/'.join(key)} is missing; {MODEL_CONFIG} describes it")
        if tuple(flat[key].shape) != tuple(spec.shape):
            raise CheckpointError(
                f"{src}: tensor {'/'.join(key)} has shape {tuple(flat[key].shape)}, but "
                f"{MODEL_CONFIG} gives {tuple(spec.shape)}"
            )
    for key, a in flat.items():
        if key[-1] in LORA_PARAMS:
            kernel = want.get(key[:-1] + ("kernel",))
            dim = 0 if key[-1] == "lora_a" else 1
            if kernel is None or a.shape[dim] != kernel.shape[dim]:
                raise CheckpointError(
                    f"{src}: LoRA factor {'/'.join(key)} of shape {tuple(a.shape)} does not fit "
                    f"its kernel {None if kernel is None else tuple(kernel.shape)}"
                )
        elif key not in want:
            raise CheckpointError(f"{src}: tensor {'/'.join(key)} is not in the model {MODEL_CONFIG} describes")


def export(
    src,
    dst,
    dtype: str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    lora: str | None = None,
    overwrite: bool = False,
) -> Any:
    """Write SRC (a checkpoint or a run's workdir) as a Hugging Face directory; returns its config."""
    dst = storage.as_path(dst)
    check_output(dst, storage.as_path(src), overwrite=overwrite)
    ref = resolve_checkpoint(src)  # a bucket checkpoint must be complete (its marker)
    ref.family.check_export("flax_to_hf", src)  # a family without a Hugging Face writer is refused
    if ref.family.hf_exporter is None:  # a bug: a family exported here names its writer
        raise TypeError(f"{ref.family.label}: export_command flax_to_hf without an hf_exporter")
    writer = importlib.import_module(ref.family.hf_exporter)
    return writer.export(ref, dst, dtype, max_shard_bytes, lora, overwrite)


def export_ref(ref, dst: Path, dtype: str | None, lora: str | None, overwrite: bool, write, write_peft) -> Any:
    """The steps every family's export shares, for a resolved checkpoint or run `ref`: a plain
    checkpoint's weights checked and written whole; a run's latest, its LoRA merged (`--lora
    merge`, in the base checkpoint's dtype unless given) or written as an adapter (`--lora peft`).
    `write(src, dst, config, params, dtype)` writes a full model (side files from `src`; dtype
    None: the weights' own) and returns its config; `write_peft(dir, flat, meta, np_dtype)` an
    adapter's files."""
    if ref.kind != "run":
        if lora is not None:
            raise InputError(f"--lora applies to a training run's workdir; {ref.path} is a plain checkpoint")
        params = load_params(ref.path / PARAMS_DIR)
        check_shapes(ref.path, ref.config, traverse_util.flatten_dict(params))
        return write(ref.path, dst, ref.config, params, dtype)
    src = ref.path
    base, config, flat, meta = runs.load_run(src)
    check_shapes(src, config, flat)
    has_lora = runs.has_lora(flat)
    if has_lora and lora not in ("merge", "peft"):
        raise InputError(f"{src} is a LoRA run: pass --lora merge (a full model) or --lora peft (an adapter)")
    if lora == "peft":
        if not has_lora:
            raise InputError(f"{src} has no LoRA weights (a full fine-tuning run); use --lora merge")
        with atomic_dir(dst, overwrite) as tmp:
            write_peft(tmp, flat, meta, np.dtype(DTYPES[dtype or "float32"]))
        return config
    if has_lora:
        flat = runs.merge_lora(flat, runs.lora_of(src, meta).scale)
    dtype = dtype or flat[family_of(config).embed].dtype.name  # the base checkpoint's
    return write(base, dst, config, traverse_util.unflatten_dict(flat), dtype)


@cli
def main(argv: list[str]) -> int:
    return run(parse("flax-to-hf", argv))


def run(a: argparse.Namespace) -> int:
    """The command on its parsed flags (conversion.commands)."""
    export(a.src, a.dst, a.dtype, lora=a.lora, overwrite=a.overwrite)
    print(f"wrote {a.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
