"""The registry of model families (`base.Family` is the contract): LLaVA-1.5, a text-only Llama
(the judge), MiniGPT-v2 and Qwen2.5-VL. A new family is its own modules and one entry in `FAMILIES`; layers
above ask `family_of(config)` or a checkpoint ref's `family`."""

from __future__ import annotations

import json
from typing import Any

from vlguard_jax import storage
from vlguard_jax.errors import CheckpointError, InputError, UsageError
from vlguard_jax.families.base import CHAT_TEMPLATE, NONE_TEMPLATE, Family
from vlguard_jax.families.llava import LLAVA
from vlguard_jax.families.minigptv2 import MINIGPTV2
from vlguard_jax.families.qwen2_5_vl import QWEN2_5_VL
from vlguard_jax.families.text_only import LLAMA
from vlguard_jax.models.llava_config import LlavaConfig
from vlguard_jax.models.minigptv2 import MiniGPTv2Config
from vlguard_jax.models.qwen2_5_vl import Qwen2_5_VLConfig
from vlguard_jax.models.text_only_config import TextOnlyConfig

FAMILIES: dict[str, Family] = {f.name: f for f in (LLAVA, LLAMA, MINIGPTV2, QWEN2_5_VL)}
DEFAULT = LLAVA  # a model_config.json without an `architecture` tag (written before families)
# Any family's model config: the one union layers above annotate with.
ModelConfig = LlavaConfig | TextOnlyConfig | MiniGPTv2Config | Qwen2_5_VLConfig


def family_of(config) -> Family:
    """The family of a model config (any family's config class)."""
    for family in FAMILIES.values():
        if isinstance(config, family.config_class):
            return family
    raise TypeError(f"{type(config).__name__} belongs to no model family")  # a bug: every config has one


def family_named(d: dict, source: str = "model_config.json") -> Family:
    """The family a saved `model_config.json` (as a dict) names."""
    name = d.get("architecture", DEFAULT.name)
    if name not in FAMILIES:
        raise CheckpointError(f"{source}: architecture {name!r} is not a known model family ({sorted(FAMILIES)})")
    return FAMILIES[name]


def load_config(path, expect: Family | None = None) -> Any:
    """A checkpoint's `model_config.json`, read by its family; `expect` refuses another family."""
    try:
        d = json.loads(storage.as_path(path).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}") from None
    family = family_named(d, str(path))
    if expect is not None and family is not expect:
        hint = " (such checkpoints serve as --judge-checkpoint)" if not family.takes_images else ""
        raise CheckpointError(f"{path}: a {family.label} checkpoint, not a {expect.label} one{hint}")
    return family.read_config(d, str(path))


def reading_hf(model_type: str) -> Family | None:
    """The family `conversion.hf_to_flax` reads a Hugging Face checkpoint of `model_type` as."""
    return next((f for f in FAMILIES.values() if model_type in f.hf_model_types), None)


def hf_model_types() -> list[str]:
    return sorted(t for f in FAMILIES.values() for t in f.hf_model_types)


def build_model(config, **kw) -> Any:
    """The Flax module of `config`'s family."""
    return family_of(config).build(config, **kw)


def templates() -> tuple[str, ...]:
    """Every prompt template a command may name: each family's own, then `chat_template`, `none`."""
    own = (t for f in FAMILIES.values() for t in f.templates())
    return tuple(dict.fromkeys((*own, CHAT_TEMPLATE, NONE_TEMPLATE)))


def owner_of(template: str) -> Family:
    """The family whose rule renders `template` (`none` and `chat_template`: any family's)."""
    for family in FAMILIES.values():
        if template in family.templates():
            return family
    if template in (CHAT_TEMPLATE, NONE_TEMPLATE):
        return DEFAULT
    raise InputError(f"unknown template {template!r}; choose from {list(templates())}")


def image_templates() -> tuple[str, ...]:
    """The templates an image question may be asked in (`vqa --conv-mode`): each image family's own."""
    return tuple(dict.fromkeys(t for f in FAMILIES.values() if f.takes_images for t in f.templates()))


def check_template(template: str, flag: str = "--template", choices: tuple[str, ...] | None = None) -> None:
    """Refuse a template no family renders (`choices`: `auto` and `templates()`), naming `flag`;
    the flags take any word, as their choices are the registry's (flags.py loads no flax)."""
    choices = choices or ("auto", *templates())
    if template not in choices:
        raise UsageError(f"{flag} {template!r}: choose from {', '.join(choices)}")


def prompt_text(question: str, image: bool, template: str, tokenizer=None) -> str:
    """One user turn's generation prompt in `template`, by the rule of the family that owns it."""
    return owner_of(template).prompt_text(question, image, template, tokenizer)
