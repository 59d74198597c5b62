"""Prompt text -> model input ids, as the VLGuard evaluation builds them: the template's
generation prompt (each family renders its own templates, `families.prompt_text`), tokenized by
LLaVA's `tokenizer_image_token` rule with each image tag expanded to the model's image tokens.
`chat_template` renders one user turn with the tokenizer's own chat template (a text-only LLM
that ships one); `none` uses the text verbatim."""

from __future__ import annotations

from vlguard_jax import families
from vlguard_jax.data import tokenization
from vlguard_jax.data.conversation import IMAGE_TAG
from vlguard_jax.data.tokenization import tokenize_with_images
from vlguard_jax.errors import InputError
from vlguard_jax.families import family_of
from vlguard_jax.families.base import CHAT_TEMPLATE


def default_template(config, tokenizer) -> str:
    """The checkpoint family's own template (`Family.default_template`)."""
    return family_of(config).default_template(tokenizer)


def prompt_text(question: str, image: bool, template: str, tokenizer=None) -> str:
    """One question's generation prompt in `template`, by the rule of the family that owns it
    (`families.prompt_text`)."""
    return families.prompt_text(question, image, template, tokenizer)


def response_text(tokenizer, token_ids) -> str:
    """Generated ids -> the response text the CLI prints and the benchmarks score."""
    return tokenizer.decode(token_ids, skip_special_tokens=True).strip()


def prompt_ids(
    tokenizer, config, question: str, image: bool, template: str, image_tokens: int | None = None
) -> list[int]:
    """The question's prompt ids in `template`, its image tag expanded to `image_tokens` ids (what
    its image input takes, `ImageInput.count`; default `fixed_image_tokens`)."""
    text = prompt_text(question, image, template, tokenizer)
    if template == CHAT_TEMPLATE:  # the template writes its own BOS
        return tokenization.ids(tokenizer, text, special=False)
    if image and not family_of(config).takes_images:
        raise InputError("a text-only model takes no image")
    if not family_of(config).takes_images:
        return prompt_ids_of_text(tokenizer, config, text)
    per = image_tokens or (fixed_image_tokens(config) if image else 1)  # a stray tag without an image: 1
    ids = prompt_ids_of_text(tokenizer, config, text, per)
    tags = ids.count(config.image_token_index) // per
    if tags != int(image):
        given = "one image" if image else "no image"
        raise InputError(f"the prompt holds {tags} {IMAGE_TAG} tag(s) for {given}: one tag per image, where it goes")
    return ids


def foreign_template(config, template: str) -> str | None:
    """A warning line when `template` is not one of the checkpoint family's own, else None."""
    family = family_of(config)
    if family.owns_template(template):
        return None
    return f"warning: --template {template} is not a {family.label} template; asking in it anyway"


def fixed_image_tokens(config) -> int:
    """The image tokens of every image of a model whose images all take one shape."""
    image = family_of(config).image_input(config)
    if image is None or image.rule.varies:  # a bug: the caller passes the image's own count
        raise ValueError("this model's images differ in their token counts: pass the image's (ImageInput.count)")
    return image.tokens


def prompt_ids_of_text(tokenizer, config, text: str, image_tokens: int | None = None) -> list[int]:
    """A rendered prompt's ids by LLaVA's `tokenizer_image_token`, each image tag expanded to
    `image_tokens` ids (default: where every image takes the same, that count)."""
    if not family_of(config).takes_images:
        return tokenize_with_images(tokenizer, text, -1, 0)
    return tokenize_with_images(tokenizer, text, config.image_token_index, image_tokens or fixed_image_tokens(config))
