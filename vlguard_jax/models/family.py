"""Model families: what differs between LLaVA and a text-only Llama (the judge), said once per
family. Layers above ask a checkpoint's family (`family_of(config)`) instead of testing config
types or `config.vision is None` themselves; a new family is one more entry here and its own
modules (MiniGPT-v2: `eva.py`, `minigptv2.py`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from vlguard_jax import storage
from vlguard_jax.errors import CheckpointError
from vlguard_jax.models.config import ImageInput, LlavaConfig, TextOnlyConfig
from vlguard_jax.models.llava import LlavaModel
from vlguard_jax.models.minigptv2 import MiniGPTv2Config, MiniGPTv2Model
from vlguard_jax.models.text_only import TextOnlyModel

VICUNA_TEMPLATE = "vicuna_v1"  # FastChat's vicuna_v1.1, which LLaVA trains on


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family.

    `name` is the `architecture` tag of its `model_config.json` (a LLaVA file carries none, as
    files written before families did); `template` its default conversation template, None for
    the tokenizer's own chat template where it has one (else `VICUNA_TEMPLATE`)."""

    name: str
    label: str  # how messages name it
    config_class: type
    model_class: type
    takes_images: bool
    trainable: bool  # VLGuard fine-tuning (full or LoRA) applies
    template: str | None
    scannable: bool = False  # its decoder layers can run scanned over stacked weights (models.stacking)
    training_templates: tuple[str, ...] = ()  # the data templates (config.data.template) it trains with
    image_transform: str = "clip"  # data.images: "clip" (CLIP's processor, LLaVA) or "squash" (MiniGPT-v2)
    tokenization: str | None = None  # data.tokenization's rule: the ids its authors' environment made
    helpfulness_template: str | None = None  # what its helpfulness scripts ask in; None: `template`
    # Top-level parameter parts: kept frozen in training (the vision side), and the projection
    # between the two sides, which trains in both modes at its own learning rate.
    frozen_parts: tuple[str, ...] = ()
    projectors: tuple[str, ...] = ()

    def read_config(self, d: dict, source: str = "model_config.json") -> Any:
        try:
            return self.config_class.from_dict(d)
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{source}: not a {self.name} model config ({type(e).__name__}: {e})") from None

    def build(self, config, **kw) -> Any:
        """The Flax module for `config`; `lora` only where the family trains. A config that carries
        its own LoRA (a MiniGPT-v2 converted with its factors kept) builds with it."""
        lora = kw.pop("lora", None)
        if not self.trainable and lora is not None:
            raise ValueError(f"LoRA applies to trainable families; a {self.name} model is not one")
        lora = lora or getattr(config, "lora", None)
        return self.model_class(config, **kw) if lora is None else self.model_class(config, lora=lora, **kw)

    def image_input(self, config) -> ImageInput | None:
        """How a model of this family takes an image; None for one that takes none."""
        if not self.takes_images:
            return None
        v = config.vision
        return ImageInput(v.image_size, v.num_channels, self.image_transform, config.num_image_tokens)

    def default_template(self, tokenizer) -> str:
        if self.template is not None:
            return self.template
        return "chat_template" if getattr(tokenizer, "chat_template", None) else VICUNA_TEMPLATE

    def owns_template(self, template: str) -> bool:
        """Whether `template` is one of this family's own (its prompts', training's or helpfulness
        scripts'); `none` (the text verbatim) and `chat_template` belong to every family."""
        own = {self.template, self.helpfulness_template, *self.training_templates, "none", "chat_template"}
        return template in own or (self.template is None and template == VICUNA_TEMPLATE)

    def question_template(self, tokenizer) -> str:
        """The template the helpfulness benchmarks ask this family in (`--conv-mode auto`)."""
        return self.helpfulness_template or self.default_template(tokenizer)


LLAVA = Family(
    "llava",
    "LLaVA",
    LlavaConfig,
    LlavaModel,
    takes_images=True,
    trainable=True,
    template="llava_v1",
    scannable=True,
    training_templates=("vicuna_v1", "llava_v1"),
    tokenization="hf431",  # transformers 4.31.0, slow tokenizer, the checkpoint's "legacy": false
    frozen_parts=("vision_tower",),
    projectors=("projector",),
    helpfulness_template=VICUNA_TEMPLATE,  # LLaVA-1.5's scripts/v1_5/eval/*.sh: --conv-mode vicuna_v1
)
LLAMA = Family(
    "llama", "text-only Llama", TextOnlyConfig, TextOnlyModel, takes_images=False, trainable=False, template=None
)
MINIGPTV2 = Family(
    "minigptv2",
    "MiniGPT-v2",
    MiniGPTv2Config,
    MiniGPTv2Model,
    takes_images=True,
    trainable=True,
    training_templates=("minigptv2",),
    template="minigptv2",
    scannable=True,
    image_transform="squash",
    tokenization="sentencepiece",  # transformers 4.30.0 (environment.yml): SentencePiece per chunk
    frozen_parts=("vision_tower", "ln_vision"),  # ln_vision is frozen with the tower, as its authors'
    projectors=("llama_proj",),
)
FAMILIES = {f.name: f for f in (LLAVA, LLAMA, MINIGPTV2)}
# Any family's model config: the one union layers above annotate with.
ModelConfig = LlavaConfig | TextOnlyConfig | MiniGPTv2Config


def family_of(config) -> Family:
    """The family of a model config (any family's config class)."""
    for family in FAMILIES.values():
        if isinstance(config, family.config_class):
            return family
    raise TypeError(f"{type(config).__name__} belongs to no model family")  # a bug: every config has one


def family_named(d: dict, source: str = "model_config.json") -> Family:
    """The family a saved `model_config.json` (as a dict) names."""
    name = d.get("architecture", LLAVA.name)
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
        hint = " (such checkpoints serve as --judge-checkpoint)" if family is LLAMA else ""
        raise CheckpointError(f"{path}: a {family.label} checkpoint, not a {expect.label} one{hint}")
    return family.read_config(d, str(path))
