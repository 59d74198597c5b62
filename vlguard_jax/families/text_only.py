"""A text-only Llama (`models/text_only.py`; Llama Guard, the safety judge): no images, not
trained here, asked in its tokenizer's chat template, else Vicuna's."""

from __future__ import annotations

from vlguard_jax.families.base import Family
from vlguard_jax.families.llava import VICUNA_TEMPLATE
from vlguard_jax.models.text_only import TextOnlyModel
from vlguard_jax.models.text_only_config import TextOnlyConfig

LLAMA = Family(
    "llama",
    "text-only Llama",
    TextOnlyConfig,
    TextOnlyModel,
    trainable=False,
    template=None,
    fallback_template=VICUNA_TEMPLATE,
    hf_model_types=("llama",),
    hf_converter="vlguard_jax.conversion.llama",
)
