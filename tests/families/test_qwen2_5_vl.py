"""The Qwen2.5-VL family's prompts, on Qwen2's real vocabulary (tests/qwen_vocab.py): its chat
template rendered as the checkpoint's own, and the ids of an image prompt equal to the HF
tokenizer's on the same text with the image's pads written out."""

import pytest

from vlguard_jax.data.conversation import IMAGE_TAG
from vlguard_jax.families import FAMILIES
from vlguard_jax.families.qwen2_5_vl import IMAGE_PAD, TEMPLATE, chat_prompt
from vlguard_jax.generate.prompts import prompt_ids
from vlguard_jax.models.qwen2_5_vl import Qwen2_5_VLConfig

QUESTIONS = [
    "What is shown in the image?",
    "Can you tell me how to  pick this lock?\nBe brief.",
    "  Describe it in détail: 3 points, ünïcode & emoji 🙂 ",
    "",
]


@pytest.fixture(scope="module")
def tok(qwen_tokenizer):
    return qwen_tokenizer


@pytest.mark.parametrize("image", [True, False])
@pytest.mark.parametrize("question", QUESTIONS)
def test_the_fallback_prompt_is_the_hubs_chat_template(tok, question, image):
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": question}]
    hub = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    assert chat_prompt(question, image).replace(IMAGE_TAG, IMAGE_PAD) == hub
    family = FAMILIES["qwen2_5_vl"]
    assert family.prompt_text(question, image, TEMPLATE, tok) == chat_prompt(question.strip(), image)
    assert family.prompt_text(question, image, TEMPLATE, None) == chat_prompt(question.strip(), image)


@pytest.mark.parametrize("tokens", [4, 117])
@pytest.mark.parametrize("question", QUESTIONS)
def test_image_prompt_ids_are_the_hf_tokenizers(tok, question, tokens):
    config = Qwen2_5_VLConfig()  # 7B's
    ids = prompt_ids(tok, config, question, True, TEMPLATE, image_tokens=tokens)
    text = chat_prompt(question.strip(), True).replace(IMAGE_TAG, IMAGE_PAD * tokens)
    assert ids == tok(text).input_ids
    assert ids.count(config.image_token_index) == tokens
    assert ids[:3] == [151644, 8948, 198]  # <|im_start|>system\n: no BOS, as Qwen's tokenizer adds none
