"""The contract of a model family: everything that differs between families, asked of the family.

A family is one `Family` (a frozen dataclass; a family whose rules differ overrides the methods
that say so). Layers above hold a family, from `families.family_of(config)` or a checkpoint's
ref, and ask it; none of them names a family, tests a config type or `config.vision is None`, or
assumes a parameter path (`tests/test_family_neutrality.py`). docs/ARCHITECTURE.md, "Adding a
family", lists what a new family writes and the tests it adds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from vlguard_jax.data import conversation, llava_tokens
from vlguard_jax.data.conversation import IMAGE_TAG
from vlguard_jax.data.images import ImageInput, PixelRule
from vlguard_jax.data.llava_tokens import Encoder
from vlguard_jax.data.pipeline import ModelInputs
from vlguard_jax.errors import CheckpointError, InputError
from vlguard_jax.models import stacking
from vlguard_jax.models.config import LORA_TARGETS, ScanLayers

NONE_TEMPLATE = "none"  # the question verbatim: every family's
CHAT_TEMPLATE = "chat_template"  # the tokenizer's own chat template: every family's, text only


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family.

    `name` is the `architecture` tag of its `model_config.json` (a LLaVA file carries none, as
    files written before families did); `label` is how messages name it.

    Config and module: `config_class` reads and writes `model_config.json` (`from_dict`,
    `to_dict`); `model_class(config, dtype=..., lora=..., scan_layers=...)` is its Flax module,
    whose `example_inputs(batch)` touch every parameter. `scannable`: its decoder layers can run
    scanned over stacked weights (models.stacking); `decoder` is the parameter path of its
    per-layer decoder (`<decoder>/layers_{i}`) and `embed` of its token embedding.

    Images: `pixel_rule(size)` makes an image's pixels (`data.images`), `image_input(config)` says
    how its model takes one (None: it takes none).

    Prompts and training: `template` is its default prompt template (None: the tokenizer's chat
    template where it has one, else `fallback_template`); `training_templates` the data templates
    it trains with, the first the default; `encoder` its training encoding (which tokens are
    supervised, `data.llava_tokens.Encoder`); `tokenization` the ids its authors' environment made
    (`data.tokenization`); `helpfulness_template` what its helpfulness scripts ask in.

    Conversion: `hf_model_types` are the `model_type`s of the Hugging Face checkpoints
    `conversion.hf_to_flax` reads as this family, and `hf_converter` the module (dotted name)
    whose `convert(src, dst, dtype, vision_tower, overwrite=..., pixels=...)` does it, with its
    own key tables (`conversion.layouts.Rules`); `export_command` names the converter that writes
    its checkpoints back in its authors' format (None: not exported), and where that is
    `flax_to_hf`, `hf_exporter` the module whose `export(ref, dst, dtype, max_shard_bytes, lora,
    overwrite)` writes the Hugging Face layout.

    Parameter groups: `frozen_parts` (top-level parts kept frozen: the vision side), `projectors`
    (trained in both modes at their own learning rate), `lora_targets` (the decoder's projections
    LoRA wraps by default).
    """

    name: str
    label: str
    config_class: type
    model_class: type
    trainable: bool  # VLGuard fine-tuning (full or LoRA) applies
    template: str | None
    pixel_rule: Callable[[int], PixelRule] | None = None  # a rule, from the image side
    fallback_template: str | None = None
    scannable: bool = False
    training_templates: tuple[str, ...] = ()
    encoder: type[Encoder] = Encoder
    tokenization: str | None = None
    helpfulness_template: str | None = None
    frozen_parts: tuple[str, ...] = ()
    projectors: tuple[str, ...] = ()
    lora_targets: tuple[str, ...] = LORA_TARGETS
    export_command: str | None = None  # the converter writing it in its authors' format (vlguard_jax.conversion)
    hf_model_types: tuple[str, ...] = ()  # config.json `model_type`s that `conversion.hf_to_flax` reads as this family
    hf_converter: str | None = None  # the module whose `convert` reads them
    hf_exporter: str | None = None  # the module whose `export` flax_to_hf hands it to (export_command flax_to_hf)
    decoder: tuple[str, ...] = ("language_model",)
    embed: tuple[str, ...] = ("language_model", "embed_tokens")

    # -- config and module --

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

    def check_export(self, command: str, source) -> None:
        """Refuse to export `source`, a checkpoint of this family, with another family's converter."""
        if command != self.export_command:
            how = (
                f"export it with vlguard_jax.conversion.{self.export_command}"
                if self.export_command
                else "it has no export"
            )
            raise CheckpointError(
                f"{source}: a {self.label} checkpoint, which conversion.{command} does not write; {how}"
            )

    def wants_scan(self, setting: ScanLayers | str | bool, config) -> bool:
        """Whether a model of `config` runs its decoder scanned under `setting`."""
        return stacking.wants_scan(setting, config, self.scannable)

    # -- images --

    @property
    def takes_images(self) -> bool:
        return self.pixel_rule is not None

    def image_input(self, config) -> ImageInput | None:
        """How a model of this family takes an image; None for one that takes none."""
        if self.pixel_rule is None:
            return None
        v = config.vision
        return ImageInput(self.pixel_rule(v.image_size), v.num_channels, config.num_image_tokens)

    def model_inputs(self, config) -> ModelInputs:
        """What training's data side needs of a model of `config`: its encoding, image id, image input."""
        image = self.image_input(config)
        if image is None:
            raise ValueError(f"a {self.label} model takes no images; it does not train here")  # a bug: refused earlier
        return ModelInputs(self.encoder, config.image_token_index, image, self.training_templates[0])

    # -- prompts --

    def default_template(self, tokenizer) -> str:
        if self.template is not None:
            return self.template
        return CHAT_TEMPLATE if getattr(tokenizer, "chat_template", None) else str(self.fallback_template)

    def templates(self) -> tuple[str, ...]:
        """Its own prompt and training templates (besides `none` and `chat_template`, everyone's)."""
        own = (self.template, self.helpfulness_template, self.fallback_template, *self.training_templates)
        return tuple(dict.fromkeys(t for t in own if t is not None))

    def owns_template(self, template: str) -> bool:
        return template in (*self.templates(), NONE_TEMPLATE, CHAT_TEMPLATE)

    def question_template(self, tokenizer) -> str:
        """The template the helpfulness benchmarks ask this family in (`--conv-mode auto`)."""
        return self.helpfulness_template or self.default_template(tokenizer)

    def prompt_text(self, question: str, image: bool, template: str, tokenizer=None) -> str:
        """One user turn's generation prompt in `template`: `none` uses the text verbatim (an image
        tag put first when there is an image), `chat_template` the tokenizer's own (text only);
        any other is a `data.conversation` template, whichever family's."""
        if template == NONE_TEMPLATE:
            return IMAGE_TAG + "\n" + question if image and IMAGE_TAG not in question else question
        question = question.replace(IMAGE_TAG, "").strip()
        if template == CHAT_TEMPLATE:
            if image:
                raise InputError(f"template {CHAT_TEMPLATE} is for text-only models; an image needs another")
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise InputError(f"template {CHAT_TEMPLATE}: this tokenizer has no chat template")
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
        return conversation.generation_prompt(llava_tokens.get_template(template), question, image)

    def turn_text(self, template: str, question: str) -> str | None:
        """One user turn as the helpfulness scripts render it, the image tag where the question
        holds it (LLaVA's `model_vqa*.py`), for a conversation template; None for a template the
        family's prompt rule renders (`prompt_text`)."""
        if template not in llava_tokens.TEMPLATES:
            return None
        return conversation.render(llava_tokens.get_template(template), [(0, question), (1, None)])
