"""A Llama decoder's tensor names (`LlamaForCausalLM`'s: `model.layers.N...`, `lm_head.weight`),
which LLaVA and MiniGPT-v2 build on, and the converter for a text-only Llama (such as Llama Guard,
for `--judge llamaguard`), the text-only family's `hf_converter`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vlguard_jax import storage
from vlguard_jax.conversion import layouts
from vlguard_jax.conversion.hf_to_flax import (
    check_dtype,
    check_plan,
    check_unused,
    plan_dtype,
    read_json,
    refuse_pixels,
    tensor_plan,
    write_checkpoint,
    write_side_files,
)
from vlguard_jax.conversion.reader import TensorSource
from vlguard_jax.errors import CheckpointError, InputError
from vlguard_jax.models.text_only_config import TextOnlyConfig
from vlguard_jax.storage import hub
from vlguard_jax.storage.files import check_output

# The decoder's rules, under `lm` (the body) and `lm_head` prefixes; LoRA factors in PEFT's names.
DECODER_RULES: tuple[layouts.Rule, ...] = (
    (r"language_model/embed_tokens", "{lm}embed_tokens.weight", None),
    (r"language_model/layers_(\d+)/(self_attn|mlp)/(\w+)/kernel", r"{lm}layers.\1.\2.\3.weight", "linear"),
    (r"language_model/layers_(\d+)/(self_attn|mlp)/(\w+)/bias", r"{lm}layers.\1.\2.\3.bias", None),
    (
        r"language_model/layers_(\d+)/(input_layernorm|post_attention_layernorm)/weight",
        r"{lm}layers.\1.\2.weight",
        None,
    ),
    (r"language_model/norm/weight", "{lm}norm.weight", None),
    (r"language_model/lm_head/kernel", "{lm_head}weight", "linear"),
    (r"language_model/layers_(\d+)/self_attn/(\w+)/lora_a", r"{lm}layers.\1.self_attn.\2.lora_A.weight", "linear"),
    (r"language_model/layers_(\d+)/self_attn/(\w+)/lora_b", r"{lm}layers.\1.self_attn.\2.lora_B.weight", "linear"),
)
RULES = layouts.Rules(DECODER_RULES)
PREFIXES: dict = dict(lm="model.", lm_head="lm_head.")  # LlamaForCausalLM's


def is_plain(keys) -> bool:
    """Whether tensor names are a LlamaForCausalLM's alone (no vision tower, no projector)."""
    keys = set(keys)
    return "model.embed_tokens.weight" in keys and not any("vision" in k or "projector" in k for k in keys)


def read_llm(
    path: Path, what: str, kind_of: Callable[[set], str] = lambda keys: "non-Llama"
) -> tuple[dict, TensorSource]:
    """(config.json, tensors) of a LlamaForCausalLM directory; anything else is refused as not
    `what`, `kind_of(tensor names)` saying what it is instead."""
    hf, source = read_json(path / "config.json"), TensorSource(path)
    if not is_plain(source.keys()) or hf.get("model_type") != "llama":
        kind = "llama" if is_plain(source.keys()) else kind_of(set(source.keys()))
        raise CheckpointError(f"{path}: a {kind} checkpoint (model_type {hf.get('model_type')!r}), not {what}")
    return hf, source


def convert(
    src, dst, dtype: str, vision_tower=None, flush_bytes: int = 64 << 20, overwrite: bool = False, pixels=(None, None)
) -> TextOnlyConfig:
    """A text-only LlamaForCausalLM into DST (conversion.hf_to_flax's contract)."""
    given, src, dst = src, hub.model_dir(src, "--src"), storage.as_path(dst)
    refuse_pixels(pixels, src)
    if vision_tower is not None:
        raise InputError(f"--vision-tower: {src} is a text-only Llama, which has no vision tower")
    check_dtype(dtype)
    check_output(dst, src, overwrite=overwrite)
    hf, source = read_llm(src, "a text-only LlamaForCausalLM such as Llama Guard")
    config = TextOnlyConfig.from_hf(hf, source=str(src / "config.json"))
    plan = tensor_plan(config, PREFIXES, plan_dtype(dtype), lambda path: source, RULES)
    check_plan(plan)
    tied = config.text.tie_word_embeddings
    check_unused(source, plan, "a LlamaForCausalLM", lambda k: tied and k.endswith("lm_head.weight"))
    origin = hub.provenance(given, src)
    write_checkpoint(
        plan,
        dst,
        config,
        dtype,
        lambda tmp: write_side_files(src, None, tmp, config, None, origin),
        flush_bytes,
        overwrite,
    )
    return config
