"""LLaVA-1.5: a CLIP tower, an mlp2x_gelu projector and a Vicuna (Llama) decoder
(`models/llava.py`), asked in its authors' templates (`data/conversation.py`)."""

from __future__ import annotations

from vlguard_jax.data.images import ClipPixels
from vlguard_jax.families.base import Family
from vlguard_jax.models.llava import LlavaModel
from vlguard_jax.models.llava_config import LlavaConfig

VICUNA_TEMPLATE = "vicuna_v1"  # FastChat's vicuna_v1.1, which LLaVA trains on

LLAVA = Family(
    "llava",
    "LLaVA",
    LlavaConfig,
    LlavaModel,
    trainable=True,
    template="llava_v1",
    pixel_rule=ClipPixels,
    scannable=True,
    training_templates=(VICUNA_TEMPLATE, "llava_v1"),
    tokenization="hf431",  # transformers 4.31.0, slow tokenizer, the checkpoint's "legacy": false
    frozen_parts=("vision_tower",),
    projectors=("projector",),
    helpfulness_template=VICUNA_TEMPLATE,
    hf_model_types=("llava", "llava_llama"),  # llava-hf's; the original LLaVA code's
    hf_converter="vlguard_jax.conversion.llava",
    hf_exporter="vlguard_jax.conversion.flax_to_llava",
    export_command="flax_to_hf",  # llava-hf's layout (transformers' LlavaForConditionalGeneration)  # LLaVA-1.5's scripts/v1_5/eval/*.sh: --conv-mode vicuna_v1
)
