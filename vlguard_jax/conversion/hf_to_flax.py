"""`python -m conversion.hf_to_flax --src SRC --dst DST [--dtype source|bfloat16|float16|float32] [--vision-tower DIR]`

Converts a Hugging Face PyTorch checkpoint into a vlguard-jax checkpoint directory: `params/`
(orbax), `model_config.json`, and the tokenizer and preprocessor files. The checkpoint's family
converts it (`Family.hf_converter`: `conversion.llava`, `conversion.llama`,
`conversion.qwen2_5_vl`) with the steps below: tensors stream one at a time, and every key and
shape is checked against the model before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# The PIL processor: the one transformers falls back to without torchvision, saved as CLIPImageProcessor.
from transformers import CLIPImageProcessorPil

from vlguard_jax import families, storage
from vlguard_jax.checkpoints.converted import (
    HUB_SOURCE,
    MODEL_CONFIG,
    PARAMS_DIR,
    StreamingWriter,
    copy_side_files,
)
from vlguard_jax.conversion import layouts
from vlguard_jax.conversion.commands import DTYPE_CHOICES, SOURCE, WEIGHT_DTYPES, parse
from vlguard_jax.conversion.reader import TensorSource
from vlguard_jax.errors import CheckpointError, InputError, cli
from vlguard_jax.families import ModelConfig, build_model, family_of
from vlguard_jax.models import abstract_params
from vlguard_jax.storage import hub
from vlguard_jax.storage.files import atomic_dir

DTYPES = {name: jnp.dtype(name) for name in WEIGHT_DTYPES}


def plan_dtype(dtype: str) -> Any:
    """The dtype the parameter shapes are built in (shapes alone are read: any will do)."""
    return DTYPES.get(dtype, jnp.float32)


def read_json(path: Path) -> dict:
    """A config file; a missing or malformed one is a CheckpointError naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None


@dataclasses.dataclass(frozen=True)
class Entry:
    """One parameter of ours and the PyTorch tensor it is read from."""

    path: str  # ours, '/'-joined
    source: TensorSource
    name: str  # the PyTorch name in `source`
    transform: str | None
    shape: tuple  # ours (flax layout)


def tensor_plan(config, prefixes: dict, dtype, source_for, rules: layouts.Rules) -> list[Entry]:
    """Every parameter of the model for `config`, with its tensor named by the family's `rules`
    under `prefixes`; `source_for(path)` names the TensorSource that holds it."""
    shapes: dict[str, Any] = traverse_util.flatten_dict(
        abstract_params(build_model(config, param_dtype=dtype)), sep="/"
    )
    plan = []
    for path, s in shapes.items():
        name, transform = rules.torch_name(path, prefixes)
        plan.append(Entry(path, source_for(path), name, transform, tuple(s.shape)))
    return plan


def check_plan(plan: list[Entry], hint=lambda entry: "") -> None:
    """Every tensor is there with the shape its parameter needs; errors name file and tensor."""
    for e in plan:
        if e.name not in e.source.shapes:
            raise CheckpointError(f"{e.source.path}: missing tensor {e.name!r} (for {e.path})")
        got = e.source.shapes[e.name]
        if layouts.flax_shape(got, e.transform) != e.shape:
            raise CheckpointError(
                f"{e.source.index[e.name]}: tensor {e.name!r} has shape {got}, "
                f"expected {layouts.source_shape(e.shape, e.transform)} for {e.path} in this config{hint(e)}"
            )
        kind = e.source.dtypes.get(e.name, "float")
        if not kind.startswith(("float", "bfloat", "F", "BF")):
            raise CheckpointError(
                f"{e.source.index[e.name]}: tensor {e.name!r} is {kind}, not floating point: a quantised "
                "checkpoint cannot be converted (its values would be cast as they are); use the float release"
            )


def check_unused(source: TensorSource, plan: list[Entry], what: str, ignore=lambda name: False) -> None:
    """No tensor of `source` is left over, but buffers and what `ignore` says."""
    used = {e.name for e in plan if e.source is source}
    extra = [k for k in source.keys() if k not in used and not layouts.IGNORED.search(k) and not ignore(k)]
    if extra:
        raise CheckpointError(
            f"{source.index[extra[0]]}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected in all) for {what}"
        )


def write_side_files(
    src: Path, vision_tower: Path | None, dst: Path, config, tokenizer, origin: dict | None = None
) -> None:
    """Tokenizer (`tokenizer` if given, else SRC's), SRC's generation and processor files, a
    CLIP image processor (the tower's, or one for its image size), and the Hub repo `origin` it
    came from, if it did (a PEFT export names it as its base)."""
    if origin is not None:
        (dst / HUB_SOURCE).write_text(json.dumps(origin, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(dst)
    copy_side_files(src, dst)
    if family_of(config).takes_images and not (dst / "preprocessor_config.json").exists():
        if vision_tower is not None and (vision_tower / "preprocessor_config.json").exists():
            shutil.copy2(vision_tower / "preprocessor_config.json", dst / "preprocessor_config.json")
        else:
            size = config.vision.image_size
            CLIPImageProcessorPil(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            ).save_pretrained(dst)


def write_checkpoint(
    plan: list[Entry], dst: Path, config, dtype: str, side_files, flush_bytes: int = 64 << 20, overwrite: bool = False
) -> None:
    """Stream the plan's tensors into DST (atomic), then the config and `side_files(tmp_dir)`."""
    np_dtype = None if dtype == SOURCE else np.dtype(DTYPES[dtype])
    with atomic_dir(dst, overwrite) as tmp:
        writer = StreamingWriter(tmp / PARAMS_DIR)
        pending = 0
        for e in plan:
            array = np.ascontiguousarray(layouts.to_flax(e.source.get(e.name), e.transform))
            array = array.astype(np_dtype or (np.float32 if array.dtype == np.float64 else array.dtype), copy=False)
            writer.add(tuple(e.path.split("/")), array)
            pending += array.nbytes
            del array
            if pending >= flush_bytes:
                writer.flush()
                pending = 0
        writer.finalize()
        config.save(tmp / MODEL_CONFIG)
        side_files(tmp)


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPE_CHOICES:
        raise InputError(f"--dtype must be one of {list(DTYPE_CHOICES)}, got {dtype!r}")


def convert(
    src,
    dst,
    dtype: str = SOURCE,
    vision_tower=None,
    flush_bytes: int = 64 << 20,
    overwrite: bool = False,
    pixels: tuple[int | None, int | None] = (None, None),
) -> ModelConfig:
    """Convert SRC into DST (which must not exist unless `overwrite`); returns the model config.
    SRC's `model_type` picks its family (`Family.hf_model_types`; none: the registry's default),
    whose converter (`Family.hf_converter`) converts it. `pixels`: (min_pixels, max_pixels) overriding the
    processor's, for a family whose images keep their size (its converter takes them)."""
    given, src, dst = src, hub.model_dir(src, "--src"), storage.as_path(dst)
    model_type = read_json(src / "config.json").get("model_type")
    family = None if model_type is None else families.reading_hf(model_type)
    if model_type is not None and family is None:
        raise CheckpointError(
            f"{src / 'config.json'}: model_type {model_type!r} is no model family's this converter reads "
            f"({', '.join(families.hf_model_types())})"
        )
    family = family or families.DEFAULT
    if family.hf_converter is None:
        raise CheckpointError(f"{src / 'config.json'}: a {family.label} is not converted from Hugging Face here")
    converter = importlib.import_module(family.hf_converter)
    return converter.convert(
        given, dst, dtype, vision_tower, flush_bytes=flush_bytes, overwrite=overwrite, pixels=pixels
    )


def refuse_pixels(pixels: tuple[int | None, int | None], src: Path) -> None:
    """`--min-pixels`/`--max-pixels` given for a family whose images have one size."""
    if pixels != (None, None):
        raise InputError(
            f"--min-pixels and --max-pixels apply to checkpoints whose images keep their size; {src} is not one"
        )


@cli
def main(argv: list[str]) -> int:
    return run(parse("hf-to-flax", argv))


def run(a: argparse.Namespace) -> int:
    """The command on its parsed flags (conversion.commands)."""
    config = convert(a.src, a.dst, a.dtype, a.vision_tower, overwrite=a.overwrite, pixels=(a.min_pixels, a.max_pixels))
    print(
        f"wrote {a.dst}: a {family_of(config).label}, {config.text.num_hidden_layers} decoder layers, dtype {a.dtype}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
