"""LLaVA-1.5's tensor names and its converter (the family's `hf_converter`): a llava-hf
(`LlavaForConditionalGeneration`, any transformers version) or original-LLaVA
(`LlavaLlamaForCausalLM`) checkpoint into a vlguard-jax checkpoint. The CLIP tower of an original
checkpoint that lacks one comes from `--vision-tower`, or the Hub id its config names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from vlguard_jax import storage
from vlguard_jax.conversion import layouts, llama
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
from vlguard_jax.models.config import vision_from_hf
from vlguard_jax.models.llava_config import LlavaConfig
from vlguard_jax.storage import hub
from vlguard_jax.storage.files import check_output

# Prefixes: vision tower, projector linear 1 and 2, language model body, lm_head.
# What we write: the llava-hf hub names, which transformers 4.x and 5.x both load.
HUB: dict[str, Any] = dict(
    vision="vision_tower.vision_model.",
    proj=("multi_modal_projector.linear_1.", "multi_modal_projector.linear_2."),
    lm="language_model.model.",
    lm_head="language_model.lm_head.",
)
ORIGINAL: dict[str, Any] = dict(
    vision="model.vision_tower.vision_tower.vision_model.",
    proj=("model.mm_projector.0.", "model.mm_projector.2."),
    lm="model.",
    lm_head="lm_head.",
)
# What we read. llava-hf checkpoints name each part one of several ways: the hub (transformers 4),
# transformers >= 4.52 in memory, transformers 5 in memory (no `vision_model.` level), and
# transformers 5's save_pretrained (legacy names, but no `vision_model.` level).
LLAVA_HF_CANDIDATES: dict[str, Any] = dict(
    vision=("vision_tower.vision_model.", "model.vision_tower.vision_model.", "model.vision_tower.", "vision_tower."),
    proj=(HUB["proj"], ("model.multi_modal_projector.linear_1.", "model.multi_modal_projector.linear_2.")),
    lm=("language_model.model.", "model.language_model."),
    lm_head=("language_model.lm_head.", "lm_head."),
)
# A separate CLIP tower directory (CLIPVisionModel or CLIPModel), for --vision-tower.
CLIP_TOWER_CANDIDATES = ("vision_model.", "")
# LLaVA's stage-1 projector file (`mm_projector.bin`): an nn.Sequential(Linear, GELU, Linear) saved
# under the model's names, or with the prefix stripped.
PROJECTOR_CANDIDATES = (
    ("model.mm_projector.0.", "model.mm_projector.2."),
    ("mm_projector.0.", "mm_projector.2."),
    ("0.", "2."),
)


# The CLIP tower's rules under `vision`, the projector's under `proj` (its two linears).
TOWER_RULES: tuple[layouts.Rule, ...] = (
    (r"vision_tower/patch_embedding/kernel", "{vision}embeddings.patch_embedding.weight", "patch"),
    (r"vision_tower/class_embedding", "{vision}embeddings.class_embedding", None),
    (r"vision_tower/position_embedding", "{vision}embeddings.position_embedding.weight", None),
    (r"vision_tower/(pre_layrnorm|post_layernorm)/(weight|bias)", r"{vision}\1.\2", None),
    (r"vision_tower/layers_(\d+)/self_attn/(\w+)/kernel", r"{vision}encoder.layers.\1.self_attn.\2.weight", "linear"),
    (r"vision_tower/layers_(\d+)/self_attn/(\w+)/bias", r"{vision}encoder.layers.\1.self_attn.\2.bias", None),
    (r"vision_tower/layers_(\d+)/(layer_norm[12])/(weight|bias)", r"{vision}encoder.layers.\1.\2.\3", None),
    (r"vision_tower/layers_(\d+)/(fc[12])/kernel", r"{vision}encoder.layers.\1.mlp.\2.weight", "linear"),
    (r"vision_tower/layers_(\d+)/(fc[12])/bias", r"{vision}encoder.layers.\1.mlp.\2.bias", None),
)
PROJECTOR_RULES: tuple[layouts.Rule, ...] = (
    (r"projector/linear_1/kernel", "{proj1}weight", "linear"),
    (r"projector/linear_1/bias", "{proj1}bias", None),
    (r"projector/linear_2/kernel", "{proj2}weight", "linear"),
    (r"projector/linear_2/bias", "{proj2}bias", None),
)
RULES = layouts.Rules(TOWER_RULES, PROJECTOR_RULES, llama.DECODER_RULES)


def torch_name(path: str, prefixes: dict) -> tuple[str, str | None]:
    """(PyTorch name, transform) of one of our LLaVA parameters in a layout (`HUB`, `ORIGINAL`)."""
    return RULES.torch_name(path, prefixes)


def detect(keys) -> tuple[str, dict]:
    """('llava_hf' or 'original', prefixes) from the tensor names of a checkpoint."""
    keys = set(keys)
    c = LLAVA_HF_CANDIDATES
    lm = layouts.first(keys, c["lm"], "embed_tokens.weight")
    if lm is not None:
        return "llava_hf", dict(
            lm=lm,
            vision=layouts.first(keys, c["vision"], "embeddings.patch_embedding.weight") or c["vision"][0],
            proj=layouts.first(keys, c["proj"], "weight") or c["proj"][0],
            lm_head=layouts.first(keys, c["lm_head"], "weight") or c["lm_head"][0],
        )
    if "model.embed_tokens.weight" in keys and any(k.startswith("model.mm_projector.") for k in keys):
        return "original", dict(ORIGINAL)
    if llama.is_plain(keys):
        raise CheckpointError(
            "a text-only Llama's tensors (model.layers.*, no vision tower): its config.json must say "
            "model_type llama to convert as one"
        )
    sample = ", ".join(sorted(keys)[:5])
    raise CheckpointError(
        "unknown checkpoint layout: expected llava-hf (language_model.model.* or "
        "model.language_model.*) or original LLaVA (model.layers.*, model.mm_projector.*); "
        f"found keys such as {sample}"
    )


def kind_of(keys) -> str:
    """'llava_hf', 'original' or 'unknown': what LLaVA layout tensor names are, for a message."""
    try:
        return detect(keys)[0]
    except CheckpointError:
        return "unknown"


def clip_tower_prefix(keys) -> str | None:
    return layouts.first(set(keys), CLIP_TOWER_CANDIDATES, "embeddings.patch_embedding.weight")


def projector_prefixes(keys) -> tuple[str, str] | None:
    keys = set(keys)
    found = layouts.first(keys, PROJECTOR_CANDIDATES, "weight")
    return found if found and found[1] + "weight" in keys else None


def _plan(src: Path, vision_tower: Path | None):
    """Reads configs and tensor headers; returns (config, tensor sources, prefixes, layout, and for
    the original layout its tokenizer with `<image>` added, else None)."""
    hf, source = read_json(src / "config.json"), TensorSource(src)
    try:
        layout, prefixes = detect(source.keys())
    except CheckpointError as e:
        raise CheckpointError(f"{src}: {e}") from None
    vision_source, tokenizer = source, None
    if layout == "original":
        inside = any(k.startswith(prefixes["vision"]) for k in source.keys())
        if vision_tower is None and not inside:
            vision_tower = _tower_named_by(src, hf)
        vision_cfg = None
        if vision_tower is not None:
            vision_cfg = vision_from_hf(read_json(vision_tower / "config.json"))
            if not inside:
                vision_source = TensorSource(vision_tower)
                prefixes["vision"] = clip_tower_prefix(vision_source.keys())
                if prefixes["vision"] is None:
                    raise CheckpointError(
                        f"{vision_tower}: no CLIP vision tower weights (vision_model.embeddings.patch_embedding.weight)"
                    )
        elif not inside:
            raise CheckpointError(
                f"{src}: the CLIP tower weights are not in this checkpoint; "
                "pass --vision-tower DIR (a CLIP model directory)"
            )
        tokenizer = tokenizer_with_image_token(src)
        config = LlavaConfig.from_original_llava(
            hf, vision_cfg, tokenizer.convert_tokens_to_ids("<image>"), source=str(src / "config.json")
        )
    else:
        if "text_config" not in hf:
            raise CheckpointError(f"{src / 'config.json'}: llava-hf weights but not a llava-hf config")
        config = LlavaConfig.from_hf(hf, source=str(src / "config.json"))
    return config, source, vision_source, prefixes, layout, tokenizer


def _tower_named_by(src: Path, hf: dict) -> Path | None:
    """The CLIP tower an original-LLaVA checkpoint without one names by Hub id in its config
    (`mm_vision_tower`, e.g. openai/clip-vit-large-patch14-336), fetched as LLaVA's own code
    fetches it; None for a name that is no Hub id."""
    name = hf.get("mm_vision_tower")
    if not name or not hub.is_hub_id(name):
        return None
    try:
        return hub.model_dir(name, "mm_vision_tower")
    except InputError as e:
        raise CheckpointError(
            f"{src}: the CLIP tower weights are not in this checkpoint; pass --vision-tower DIR (a CLIP folder or "
            f"Hub id). Its config's {e}"
        ) from None


def tokenizer_with_image_token(src: Path) -> Any:
    """The original LLaVA splices images at id -200 and its tokenizer has no `<image>`; we add the
    token to the tokenizer, which gives it the next free id."""
    try:
        tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    except Exception as e:
        raise CheckpointError(f"{src}: cannot load the tokenizer ({e})") from None
    tok.add_tokens(["<image>"], special_tokens=True)
    return tok


def _check(plan, source: TensorSource, vision_source: TensorSource, config: LlavaConfig, layout: str):
    check_plan(plan)

    def ignore(name):
        if config.text.tie_word_embeddings and name.endswith("lm_head.weight"):
            return True
        # a tower given separately wins over any inside
        return vision_source is not source and name.startswith(ORIGINAL["vision"])

    check_unused(source, [e for e in plan if e.source is source], f"layout {layout}", ignore)


def convert(
    src, dst, dtype: str, vision_tower=None, flush_bytes: int = 64 << 20, overwrite: bool = False, pixels=(None, None)
) -> LlavaConfig:
    """A llava-hf or original-LLaVA checkpoint into DST (conversion.hf_to_flax's contract)."""
    given, src, dst = src, hub.model_dir(src, "--src"), storage.as_path(dst)
    refuse_pixels(pixels, src)
    origin = hub.provenance(given, src)
    vision_tower = hub.model_dir(vision_tower, "--vision-tower") if vision_tower else None
    check_dtype(dtype)
    check_output(dst, src, *([vision_tower] if vision_tower else []), overwrite=overwrite)
    config, source, vision_source, prefixes, layout, tokenizer = _plan(src, vision_tower)
    separate = vision_source is not source
    plan = tensor_plan(
        config,
        prefixes,
        plan_dtype(dtype),
        lambda path: vision_source if separate and path.startswith("vision_tower/") else source,
        RULES,
    )
    _check(plan, source, vision_source, config, layout)
    write_checkpoint(
        plan,
        dst,
        config,
        dtype,
        lambda tmp: write_side_files(
            src, vision_source.path if separate else vision_tower, tmp, config, tokenizer, origin
        ),
        flush_bytes,
        overwrite,
    )
    return config
