"""Prompt text -> model input ids, as the VLGuard evaluation builds them: the template's
generation prompt (`... USER: <image>\\nQ ASSISTANT:`), tokenized by LLaVA's
`tokenizer_image_token` rule with each image tag expanded to `num_image_tokens` ids."""
from __future__ import annotations

from vlguard_jax.data.conversation import IMAGE_TAG, generation_prompt, get_template
from vlguard_jax.data.tokenize import tokenize_with_images

TEMPLATE_CHOICES = ("llava_v1", "vicuna_v1", "none")


def prompt_text(question: str, image: bool, template: str = "llava_v1") -> str:
    """`none` uses the text verbatim (an image tag is put first when there is an image)."""
    question = question.replace(IMAGE_TAG, "").strip() if template != "none" else question
    if template == "none":
        return IMAGE_TAG + "\n" + question if image and IMAGE_TAG not in question else question
    return generation_prompt(get_template(template), question, image)


def response_text(tokenizer, token_ids) -> str:
    """Generated ids -> the response text the CLI prints and the benchmarks score."""
    return tokenizer.decode(token_ids, skip_special_tokens=True).strip()


def prompt_ids(tokenizer, config, question: str, image: bool, template: str = "llava_v1") -> list[int]:
    return tokenize_with_images(tokenizer, prompt_text(question, image, template), config.image_token_index,
                                config.num_image_tokens)
