"""Prompt text -> model input ids, as the VLGuard evaluation builds them: the template's
generation prompt (`... USER: <image>\\nQ ASSISTANT:`), tokenized by LLaVA's
`tokenizer_image_token` rule with each image tag expanded to `num_image_tokens` ids.

`chat_template` renders one user turn with the tokenizer's own chat template (a text-only LLM
that ships one); `none` uses the text verbatim. `minigptv2` is MiniGPT-v2's evaluation prompt
(`CONV_VISION_minigptv2` with `prepare_texts`): `<s>[INST] <Img><image></Img> Q [/INST]`. Its
`<s>` is text the tokenizer reads as BOS, after the BOS it adds: the authors' ids start with two
BOS, and so do these (the image splits the prompt as their `<ImageHere>` does)."""

from __future__ import annotations

from vlguard_jax.data import tokenization
from vlguard_jax.data.conversation import IMAGE_TAG, generation_prompt, get_template
from vlguard_jax.data.preprocess import tokenize_with_images
from vlguard_jax.errors import InputError
from vlguard_jax.models.family import family_of


def default_template(config, tokenizer) -> str:
    """The authors' `llava_v1` for a LLaVA; for a text-only LLM its own chat template where its
    tokenizer has one, else `vicuna_v1` (Vicuna's: FastChat's vicuna_v1.1, which LLaVA trains on)."""
    return family_of(config).default_template(tokenizer)


def prompt_text(question: str, image: bool, template: str = "llava_v1", tokenizer=None) -> str:
    """`none` uses the text verbatim (an image tag is put first when there is an image)."""
    question = question.replace(IMAGE_TAG, "").strip() if template != "none" else question
    if template == "none":
        return IMAGE_TAG + "\n" + question if image and IMAGE_TAG not in question else question
    if template == "minigptv2":
        return f"<s>[INST] {f'<Img>{IMAGE_TAG}</Img> ' if image else ''}{question} [/INST]"
    if template == "chat_template":
        if image:
            raise InputError("template chat_template is for text-only models; an image needs llava_v1")
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise InputError("template chat_template: this tokenizer has no chat template")
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return generation_prompt(get_template(template), question, image)


def response_text(tokenizer, token_ids) -> str:
    """Generated ids -> the response text the CLI prints and the benchmarks score."""
    return tokenizer.decode(token_ids, skip_special_tokens=True).strip()


def prompt_ids(tokenizer, config, question: str, image: bool, template: str = "llava_v1") -> list[int]:
    text = prompt_text(question, image, template, tokenizer)
    if template == "chat_template":  # the template writes its own BOS
        return tokenization.ids(tokenizer, text, special=False)
    if image and not family_of(config).takes_images:
        raise InputError("a text-only model takes no image")
    ids = prompt_ids_of_text(tokenizer, config, text)
    if family_of(config).takes_images:
        tags = ids.count(config.image_token_index) // max(config.num_image_tokens, 1)
        if tags != int(image):
            given = "one image" if image else "no image"
            raise InputError(
                f"the prompt holds {tags} {IMAGE_TAG} tag(s) for {given}: one tag per image, where it goes"
            )
    return ids


def foreign_template(config, template: str) -> str | None:
    """A warning line when `template` is not one of the checkpoint family's own, else None."""
    family = family_of(config)
    if family.owns_template(template):
        return None
    return f"warning: --template {template} is not a {family.label} template; asking in it anyway"


def prompt_ids_of_text(tokenizer, config, text: str) -> list[int]:
    """A rendered prompt's ids by LLaVA's `tokenizer_image_token`, each image tag expanded."""
    if not family_of(config).takes_images:
        return tokenize_with_images(tokenizer, text, -1, 0)
    return tokenize_with_images(tokenizer, text, config.image_token_index, config.num_image_tokens)
