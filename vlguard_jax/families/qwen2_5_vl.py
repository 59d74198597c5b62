"""Qwen2.5-VL (Qwen2.5-VL-3B/7B/32B-Instruct): the windowed vision tower and merger, a Qwen2
decoder under multimodal RoPE (`models/qwen2_5_vl.py`, `models/qwen_vision.py`), images at their
own size in buckets (`data/qwen_pixels.py`), asked in its chat template."""

from __future__ import annotations

import dataclasses

from vlguard_jax.data.conversation import IMAGE_TAG
from vlguard_jax.data.images import ImageInput
from vlguard_jax.data.qwen_pixels import QwenPixels
from vlguard_jax.data.qwen_tokens import SYSTEM, TEMPLATE, VISION, QwenEncoder
from vlguard_jax.families.base import Family
from vlguard_jax.models.qwen2_5_vl import Qwen2_5_VLConfig, Qwen2_5_VLModel

IMAGE_PAD = "<|image_pad|>"


def chat_prompt(question: str, image: bool) -> str:
    """Qwen2.5-VL's chat template (`chat_template.json`) for one user turn, image first, with its
    default system prompt and the generation prompt; the image's pads are one `<image>` tag."""
    vision = VISION if image else ""
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{vision}{question}<|im_end|>\n<|im_start|>assistant\n"
    )


@dataclasses.dataclass(frozen=True)
class QwenFamily(Family):
    @property
    def takes_images(self) -> bool:
        return True

    def image_input(self, config: Qwen2_5_VLConfig) -> ImageInput:
        v = config.vision
        rule = QwenPixels(
            config.min_pixels,
            config.max_pixels,
            config.image_mean,
            config.image_std,
            v.patch_size,
            v.spatial_merge_size,
            v.temporal_patch_size,
        )
        return ImageInput(rule, v.in_channels, 1)

    def prompt_text(self, question: str, image: bool, template: str, tokenizer=None) -> str:
        """`qwen2_5_vl`: the tokenizer's chat template where it has one (the checkpoint's), else
        `chat_prompt`; one user turn, the image first."""
        if template != TEMPLATE:
            return super().prompt_text(question, image, template, tokenizer)
        question = question.replace(IMAGE_TAG, "").strip()
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            return chat_prompt(question, image)
        content = [{"type": "image"}] if image else []
        content.append({"type": "text", "text": question})
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        return text.replace(IMAGE_PAD, IMAGE_TAG, 1) if image else text


QWEN2_5_VL = QwenFamily(
    "qwen2_5_vl",
    "Qwen2.5-VL",
    Qwen2_5_VLConfig,
    Qwen2_5_VLModel,
    trainable=True,
    template=TEMPLATE,  # the checkpoint's chat template, or Qwen2.5-VL's own where it ships none
    pixel_rule=None,  # image_input above: the rule takes the processor's settings
    scannable=True,
    training_templates=(TEMPLATE,),
    encoder=QwenEncoder,
    frozen_parts=("visual",),
    projectors=("merger",),  # trained at its own learning rate, as LLaVA's projector
    hf_model_types=("qwen2_5_vl",),
    hf_converter="vlguard_jax.conversion.qwen2_5_vl",
    hf_exporter="vlguard_jax.conversion.flax_to_qwen2_5_vl",
    export_command="flax_to_hf",  # the Hub's layout (transformers' Qwen2_5_VLForConditionalGeneration)
)
