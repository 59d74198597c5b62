"""`vlguard-convert hf-to-flax --src Qwen/Qwen2.5-VL-7B-Instruct` for Qwen2.5-VL (`model_type:
qwen2_5_vl`; the family's `hf_converter`).

Both config layouts users have: the Hub's (a flat `config.json`, `rope_scaling: {type: mrope,
mrope_section}`, `preprocessor_config.json` with `min_pixels`/`max_pixels`) and the one
transformers 5 writes (a nested `text_config` with `rope_parameters`, the processor's
`size: {shortest_edge, longest_edge}`). Tensors are read under either naming: the Hub's
(`visual.`, `model.`) or transformers 4.5x's in-memory one (`model.visual.`,
`model.language_model.`). The tokenizer files, the chat template and the processor settings
travel with the checkpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from flax import traverse_util
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from vlguard_jax import storage
from vlguard_jax.conversion.hf_to_flax import (
    Entry,
    check_dtype,
    check_plan,
    check_unused,
    plan_dtype,
    read_json,
    write_checkpoint,
    write_side_files,
)
from vlguard_jax.conversion.reader import TensorSource
from vlguard_jax.errors import CheckpointError
from vlguard_jax.families import build_model
from vlguard_jax.models.config import TextConfig
from vlguard_jax.models.params import abstract_params
from vlguard_jax.models.qwen2_5_vl import MAX_PIXELS, MIN_PIXELS, Qwen2_5_VLConfig
from vlguard_jax.models.qwen_vision import QwenVisionConfig
from vlguard_jax.storage import hub
from vlguard_jax.storage.files import check_output

MODEL_TYPE = "qwen2_5_vl"
LAYOUTS = {  # naming: (vision prefix, decoder prefix)
    "hub": ("visual.", "model."),
    "nested": ("model.visual.", "model.language_model."),
}
# Our parameter path (after the part) -> the tensor name (after the prefix), and its transform.
_RULES = (
    (r"patch_embed/kernel", r"patch_embed.proj.weight", "patch"),
    (r"blocks_(\d+)/(norm1|norm2)/weight", r"blocks.\1.\2.weight", None),
    (r"blocks_(\d+)/(qkv|proj)/kernel", r"blocks.\1.attn.\2.weight", "linear"),
    (r"blocks_(\d+)/(qkv|proj)/bias", r"blocks.\1.attn.\2.bias", None),
    (r"blocks_(\d+)/(gate_proj|up_proj|down_proj)/kernel", r"blocks.\1.mlp.\2.weight", "linear"),
    (r"blocks_(\d+)/(gate_proj|up_proj|down_proj)/bias", r"blocks.\1.mlp.\2.bias", None),
    (r"merger/ln_q/weight", r"merger.ln_q.weight", None),
    (r"merger/fc1/kernel", r"merger.mlp.0.weight", "linear"),
    (r"merger/fc1/bias", r"merger.mlp.0.bias", None),
    (r"merger/fc2/kernel", r"merger.mlp.2.weight", "linear"),
    (r"merger/fc2/bias", r"merger.mlp.2.bias", None),
    (r"embed_tokens", r"embed_tokens.weight", None),
    (r"norm/weight", r"norm.weight", None),
    (r"layers_(\d+)/(input_layernorm|post_attention_layernorm)/weight", r"layers.\1.\2.weight", None),
    (r"layers_(\d+)/mlp/(\w+)/kernel", r"layers.\1.mlp.\2.weight", "linear"),
    (r"layers_(\d+)/self_attn/(\w+)/kernel", r"layers.\1.self_attn.\2.weight", "linear"),
    (r"layers_(\d+)/self_attn/(\w+)/bias", r"layers.\1.self_attn.\2.bias", None),
)
_COMPILED = tuple((re.compile(p + "$"), r, t) for p, r, t in _RULES)


def torch_name(path: str, layout: str) -> tuple[str, str | None]:
    """(tensor name, transform) of our parameter `path` ('/'-joined) in `layout`'s naming."""
    if path == "language_model/lm_head/kernel":
        return "lm_head.weight", "linear"
    part, _, rest = path.partition("/")
    prefix = LAYOUTS[layout][0 if part in ("visual", "merger") else 1]
    rest = path if part == "merger" else rest
    for pattern, repl, transform in _COMPILED:
        m = pattern.match(rest)
        if m:
            return prefix + m.expand(repl), transform
    raise ValueError(f"no tensor for parameter {path}")  # a bug: every parameter has a rule


def detect_layout(source: TensorSource) -> str:
    keys = set(source.keys())
    for layout, (vision, _) in LAYOUTS.items():
        if vision + "patch_embed.proj.weight" in keys:
            return layout
    raise CheckpointError(f"{source.path}: no Qwen2.5-VL vision tower (visual.patch_embed.proj.weight)")


def text_config(hf: dict, source: str) -> TextConfig:
    """The decoder's config from either layout (`text_config` nested, or flat)."""
    t = hf.get("text_config") or hf
    rope = t.get("rope_parameters") or t.get("rope_scaling") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type"))
    if kind not in ("default", "mrope") or "mrope_section" not in rope:
        raise CheckpointError(f"{source}: rope {rope} is not Qwen2.5-VL's multimodal RoPE (mrope_section)")
    if t.get("use_sliding_window"):
        raise CheckpointError(f"{source}: use_sliding_window is set; sliding-window attention is not supported")
    heads, hidden = t["num_attention_heads"], t["hidden_size"]
    eos = t.get("eos_token_id", hf.get("eos_token_id"))
    return TextConfig(
        vocab_size=t["vocab_size"],
        hidden_size=hidden,
        intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=t.get("num_key_value_heads") or heads,
        head_dim=hidden // heads,  # transformers' Qwen2.5-VL attention ignores a head_dim key
        rms_norm_eps=t.get("rms_norm_eps", 1e-6),
        rope_theta=float(rope.get("rope_theta", t.get("rope_theta", 1e6))),
        max_position_embeddings=t.get("max_position_embeddings", 128000),
        qkv_bias=True,
        hidden_act=t.get("hidden_act", "silu"),
        tie_word_embeddings=hf.get("tie_word_embeddings", t.get("tie_word_embeddings", False)),
        bos_token_id=t.get("bos_token_id", hf.get("bos_token_id")),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=t.get("pad_token_id", hf.get("pad_token_id")),
        mrope_section=tuple(rope["mrope_section"]),
    )


def vision_config(hf: dict) -> QwenVisionConfig:
    v = dict(hf["vision_config"])
    if "in_chans" in v:  # the Hub's name
        v.setdefault("in_channels", v.pop("in_chans"))
    v["rope_theta"] = (v.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    return QwenVisionConfig.from_dict(v)


def processor_settings(pre: dict, source: str, vision: QwenVisionConfig) -> dict:
    """min_pixels and max_pixels (the Hub's keys, or transformers 5's `size`), mean and std; its
    patch, merge and temporal sizes must be the tower's."""
    size = pre.get("size") or {}
    lo = pre.get("min_pixels", size.get("shortest_edge", MIN_PIXELS))
    hi = pre.get("max_pixels", size.get("longest_edge", MAX_PIXELS))
    tower = dict(
        patch_size=vision.patch_size,
        merge_size=vision.spatial_merge_size,
        temporal_patch_size=vision.temporal_patch_size,
    )
    for key, want in tower.items():
        if pre.get(key) not in (None, want):
            raise CheckpointError(f"{source}: {key} {pre[key]} is not the vision tower's {want}")
    out: dict[str, Any] = dict(min_pixels=int(lo), max_pixels=int(hi))
    for key in ("image_mean", "image_std"):
        if key in pre:
            out[key] = tuple(float(x) for x in pre[key])
    return out


def read_config(src: Path, pixels: tuple[int | None, int | None] = (None, None)) -> Qwen2_5_VLConfig:
    """The model and processor config of SRC; `pixels` (min, max) overrides the processor's."""
    hf = read_json(src / "config.json")
    where = str(src / "config.json")
    if hf.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{where}: model_type {hf.get('model_type')!r} is not {MODEL_TYPE!r}")
    pre_path = src / "preprocessor_config.json"
    pre = read_json(pre_path) if pre_path.exists() else {}
    pre = dict(pre, **{k: v for k, v in zip(("min_pixels", "max_pixels"), pixels) if v is not None})
    try:
        vision = vision_config(hf)
        return Qwen2_5_VLConfig(
            vision=vision,
            text=text_config(hf, where),
            image_token_index=hf.get("image_token_id", 151655),
            vision_start_token_id=hf.get("vision_start_token_id", 151652),
            vision_end_token_id=hf.get("vision_end_token_id", 151653),
            **processor_settings(pre, str(pre_path), vision),
        )
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: not a Qwen2.5-VL config ({type(e).__name__}: {e})") from None


def plan(config: Qwen2_5_VLConfig, source: TensorSource, dtype) -> list[Entry]:
    """Every parameter with its tensor, checked (names, shapes, none left over) before writing."""
    layout = detect_layout(source)
    shapes: dict[str, Any] = traverse_util.flatten_dict(
        abstract_params(build_model(config, param_dtype=dtype)), sep="/"
    )
    entries = [Entry(path, source, *torch_name(path, layout), tuple(s.shape)) for path, s in shapes.items()]
    check_plan(entries)
    tied = config.text.tie_word_embeddings
    check_unused(source, entries, f"Qwen2.5-VL ({layout} naming)", lambda name: tied and name == "lm_head.weight")
    return entries


def _side_files(src: Path, tmp: Path, config: Qwen2_5_VLConfig, origin) -> None:
    """The tokenizer, chat template and processor files; the processor's pixel range as converted
    (a checkpoint without a processor file gets Qwen2-VL's processor with that range)."""
    pre_path = src / "preprocessor_config.json"
    if pre_path.exists():
        pre = read_json(pre_path)
        if "size" in pre:
            pre["size"] = dict(pre["size"], shortest_edge=config.min_pixels, longest_edge=config.max_pixels)
        if "size" not in pre or "min_pixels" in pre:
            pre.update(min_pixels=config.min_pixels, max_pixels=config.max_pixels)
        (tmp / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    else:
        Qwen2VLImageProcessorPil(min_pixels=config.min_pixels, max_pixels=config.max_pixels).save_pretrained(tmp)
    write_side_files(src, None, tmp, config, None, origin)  # the rest; the processor file is there


def convert(
    src,
    dst,
    dtype: str,
    vision_tower=None,
    flush_bytes: int = 64 << 20,
    overwrite: bool = False,
    pixels: tuple[int | None, int | None] = (None, None),
) -> Qwen2_5_VLConfig:
    """Convert the Qwen2.5-VL checkpoint SRC (a Hub id or folder) into DST; returns the config.
    `pixels`: (min_pixels, max_pixels) overriding its processor's, recorded in the checkpoint
    (model_config.json and preprocessor_config.json) so training and evaluation both use them."""
    if vision_tower is not None:
        raise CheckpointError("--vision-tower does not apply to Qwen2.5-VL: its tower is in the checkpoint")
    check_dtype(dtype)
    origin_src, src, dst = src, hub.model_dir(src, "--src"), storage.as_path(dst)
    origin = hub.provenance(origin_src, src)
    check_output(dst, src, overwrite=overwrite)
    config = read_config(src, pixels)
    entries = plan(config, TensorSource(src), plan_dtype(dtype))
    write_checkpoint(
        entries,
        dst,
        config,
        dtype,
        lambda tmp: _side_files(src, tmp, config, origin),
        flush_bytes,
        overwrite,
    )
    return config
