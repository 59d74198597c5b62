"""`python -m conversion.assemble --llm DIR|ID --vision-tower DIR|ID --projector FILE|ID --dst DST [--dtype ...]`

Assembles the starting point of LLaVA-1.5's visual instruction tuning (the paper's mixed recipe)
from its three released parts, as LLaVA's `train.py` does when it is given `--model_name_or_path
vicuna`, `--vision_tower openai/clip-vit-large-patch14-336` and `--pretrain_mm_mlp_adapter
mm_projector.bin`:

- the base LLM, a Hugging Face `LlamaForCausalLM` (Vicuna-7B/13B-v1.5), safetensors or `.bin`;
- the CLIP tower, a `CLIPModel` (its text tower is ignored) or a `CLIPVisionModel`;
- the stage-1 projector file (`model.mm_projector.0/2.weight/bias`), `.bin` or safetensors.

The result is the same kind of checkpoint `hf_to_flax` writes, with LLaVA-1.5's settings
(`mm_vision_select_layer` -2, patch features, `mlp2x_gelu`) and the LLM's tokenizer with `<image>`
added as in the original-LLaVA layout. Every tensor is checked before anything is written, and the
output appears only when complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vlguard_jax import storage
from vlguard_jax.conversion import llama, llava
from vlguard_jax.conversion.commands import SOURCE, parse
from vlguard_jax.conversion.hf_to_flax import (
    Entry,
    check_dtype,
    check_plan,
    check_unused,
    plan_dtype,
    read_json,
    tensor_plan,
    write_checkpoint,
    write_side_files,
)
from vlguard_jax.conversion.reader import TensorSource
from vlguard_jax.errors import CheckpointError, cli
from vlguard_jax.models.config import text_from_hf, vision_from_hf
from vlguard_jax.models.llava_config import LlavaConfig
from vlguard_jax.storage import hub
from vlguard_jax.storage.files import check_output

# LLaVA-1.5's fine-tuning settings (scripts/v1_5/finetune*.sh).
SELECT_LAYER = -2
SELECT_FEATURE = "default"  # mm_vision_select_feature "patch"
CLIP_TEXT_PARTS = ("text_model.", "logit_scale", "text_projection.", "visual_projection.")


def _tower(path: Path) -> tuple[dict, TensorSource, str]:
    hf = read_json(path / "config.json")
    if hf.get("model_type") not in ("clip", "clip_vision_model"):
        raise CheckpointError(
            f"{path / 'config.json'}: model_type {hf.get('model_type')!r} is not a CLIP "
            "model (CLIPModel or CLIPVisionModel)"
        )
    source = TensorSource(path)
    prefix = llava.clip_tower_prefix(source.keys())
    if prefix is None:
        raise CheckpointError(f"{path}: no CLIP vision tower weights (vision_model.embeddings.patch_embedding.weight)")
    return hf, source, prefix


def _projector(path: Path) -> tuple[TensorSource, tuple[str, str]]:
    source = TensorSource(path)
    prefixes = llava.projector_prefixes(source.keys())
    if prefixes is None:
        found = ", ".join(sorted(source.keys())[:4])
        raise CheckpointError(
            f"{path}: not a LLaVA mlp2x_gelu projector: expected tensors "
            f"model.mm_projector.0.weight and model.mm_projector.2.weight, found {found}"
        )
    return source, prefixes


PROJECTOR_FILES = ("mm_projector.bin", "mm_projector.safetensors")  # in the stage-1 repos


def plan(llm, vision_tower, projector, dtype: str = SOURCE) -> tuple[LlavaConfig, list[Entry], Any]:
    """(config, tensor plan, tokenizer with `<image>`): everything checked, nothing written."""
    llm, vision_tower, projector = Path(llm), Path(vision_tower), Path(projector)
    for what, p in (("--llm", llm), ("--vision-tower", vision_tower)):
        if not p.is_dir():
            raise CheckpointError(f"{p}: no such directory ({what})")
    if not projector.is_file():
        raise CheckpointError(f"{projector}: no such file (--projector)")
    llm_hf, llm_src = llama.read_llm(
        llm, "a base LlamaForCausalLM such as Vicuna; a LLaVA converts with conversion.hf_to_flax", llava.kind_of
    )
    tower_hf, tower_src, tower_prefix = _tower(vision_tower)
    proj_src, proj_prefixes = _projector(projector)
    tokenizer = llava.tokenizer_with_image_token(llm)
    try:
        config = LlavaConfig(
            vision=vision_from_hf(tower_hf),
            text=text_from_hf(llm_hf, source=str(llm / "config.json")),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            vision_feature_layer=SELECT_LAYER,
            vision_feature_select_strategy=SELECT_FEATURE,
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{llm} + {vision_tower}: {e}") from None
    prefixes = dict(llama.PREFIXES, vision=tower_prefix, proj=proj_prefixes)

    def source_for(path: str) -> TensorSource:
        return {"vision_tower": tower_src, "projector": proj_src}.get(path.split("/")[0], llm_src)

    def hint(entry) -> str:
        if entry.source is not proj_src:
            return ""
        return (
            f"; the projector must map the tower's {config.vision.hidden_size}-wide features to the "
            f"LLM's hidden size {config.text.hidden_size}"
        )

    entries = tensor_plan(config, prefixes, plan_dtype(dtype), source_for, llava.RULES)
    check_plan(entries, hint)
    tie = config.text.tie_word_embeddings
    check_unused(llm_src, entries, "a LlamaForCausalLM", lambda k: tie and k == "lm_head.weight")
    check_unused(
        tower_src,
        entries,
        "a CLIP vision tower",
        lambda k: not k.startswith(tower_prefix) or k.startswith(CLIP_TEXT_PARTS),
    )
    check_unused(proj_src, entries, "a LLaVA mlp2x_gelu projector")
    return config, entries, tokenizer


def assemble(llm, vision_tower, projector, dst, dtype: str = SOURCE, overwrite: bool = False) -> LlavaConfig:
    """Write DST (which must not exist unless `overwrite`) from the three parts; returns the config."""
    check_dtype(dtype)
    llm, vision_tower = hub.model_dir(llm, "--llm"), hub.model_dir(vision_tower, "--vision-tower")
    projector = hub.model_file(projector, "--projector", PROJECTOR_FILES)
    check_output(dst, llm, vision_tower, projector, overwrite=overwrite)
    config, entries, tokenizer = plan(llm, vision_tower, projector, dtype)
    write_checkpoint(
        entries,
        storage.as_path(dst),
        config,
        dtype,
        lambda tmp: write_side_files(Path(llm), Path(vision_tower), tmp, config, tokenizer),
        overwrite=overwrite,
    )
    return config


@cli
def main(argv: list[str]) -> int:
    return run(parse("assemble", argv))


def run(a: argparse.Namespace) -> int:
    """The command on its parsed flags (conversion.commands)."""
    config = assemble(a.llm, a.vision_tower, a.projector, a.dst, a.dtype, a.overwrite)
    print(
        f"wrote {a.dst}: {config.text.num_hidden_layers}-layer Llama, {config.vision.num_hidden_layers}-layer "
        f"CLIP, <image> = id {config.image_token_index}, dtype {a.dtype}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
