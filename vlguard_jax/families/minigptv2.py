"""MiniGPT-v2 (Vision-CAIR/MiniGPT-4): EVA ViT-g, ln_vision, 1x4 patch strips, llama_proj and a
Llama-2 chat decoder (`models/minigptv2.py`, `models/eva.py`), trained by its authors' rule
(`data/minigptv2_tokens.py`) and asked in their evaluation prompt."""

from __future__ import annotations

import dataclasses

from vlguard_jax.data.conversation import IMAGE_TAG
from vlguard_jax.data.images import SquashPixels
from vlguard_jax.data.minigptv2_tokens import TEMPLATE, MiniGPTv2Encoder
from vlguard_jax.families.base import Family
from vlguard_jax.models.minigptv2 import MiniGPTv2Config, MiniGPTv2Model


@dataclasses.dataclass(frozen=True)
class MiniGPTv2Family(Family):
    def prompt_text(self, question: str, image: bool, template: str, tokenizer=None) -> str:
        """`minigptv2`: `CONV_VISION_minigptv2` with `prepare_texts`, `<s>[INST] <Img><image></Img>
        Q [/INST]`. Its `<s>` is text the tokenizer reads as BOS, after the BOS it adds: the
        authors' ids start with two BOS, and so do these (the image splits the prompt as their
        `<ImageHere>` does)."""
        if template != TEMPLATE:
            return super().prompt_text(question, image, template, tokenizer)
        question = question.replace(IMAGE_TAG, "").strip()
        return f"<s>[INST] {f'<Img>{IMAGE_TAG}</Img> ' if image else ''}{question} [/INST]"


MINIGPTV2 = MiniGPTv2Family(
    "minigptv2",
    "MiniGPT-v2",
    MiniGPTv2Config,
    MiniGPTv2Model,
    trainable=True,
    template=TEMPLATE,
    pixel_rule=SquashPixels,
    scannable=True,
    training_templates=(TEMPLATE,),
    encoder=MiniGPTv2Encoder,
    tokenization="sentencepiece",  # transformers 4.30.0 (environment.yml): SentencePiece per chunk
    frozen_parts=("vision_tower", "ln_vision"),  # ln_vision is frozen with the tower, as its authors'
    projectors=("llama_proj",),
    export_command="flax_to_minigptv2",  # the authors' stage-3 .pth
)
