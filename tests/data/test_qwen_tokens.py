"""Qwen2.5-VL's training encoding against its authors' rule (QwenLM/Qwen2.5-VL,
qwen-vl-finetune `preprocess_qwen_visual`), written here from their code: messages built from
the LLaVA-format turns, rendered by the chat template, tokenized whole, and labels from two
tokens after each `assistant` token through one token after its `<|im_end|>`. Real vocabulary;
real VLGuard conversations where ../shared is present, hand-made ones always."""

import re

import pytest

from vlguard_jax.data.convert_vlguard import to_llava
from vlguard_jax.data.qwen_tokens import QwenEncoder
from vlguard_jax.data.records import load_vlguard
from vlguard_jax.data.tokenization import IGNORE, TokenizationError

IMAGE_PAD, ASSISTANT, IM_END = 151655, 77091, 151645


@pytest.fixture(scope="module")
def tok(qwen_tokenizer):
    return qwen_tokenizer


def authors(tok, conversations, n_image):
    """Their messages, chat template and label scan (ids 77091 `assistant`, 151645 `<|im_end|>`)."""
    messages = []
    for turn in conversations:
        if turn["from"] == "human":
            content = []
            for seg in re.split(r"(<image>)", turn["value"]):
                if seg == "<image>":
                    content.append({"type": "image"})
                elif seg.strip():
                    content.append({"type": "text", "text": seg.strip()})
            messages.append({"role": "user", "content": content})
        else:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": turn["value"]}]})
    text = tok.apply_chat_template(messages, tokenize=False)
    ids = tok(text.replace("<|image_pad|>", "<|image_pad|>" * n_image)).input_ids
    labels = [IGNORE] * len(ids)
    pos = 0
    while pos < len(ids):
        if ids[pos] == ASSISTANT:
            start = end = pos + 2
            while end < len(ids) and ids[end] != IM_END:
                end += 1
            if end < len(ids):
                labels[start : end + 2] = ids[start : end + 2]
                pos = end
        pos += 1
    return ids, labels


HAND = [
    [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A cat."}],
    [{"from": "human", "value": "Look at <image> and  tell me.\n"}, {"from": "gpt", "value": " Sure: two\nlines "}],
    [
        {"from": "human", "value": "What is 2+2?"},
        {"from": "gpt", "value": "4"},
        {"from": "human", "value": "And 3+3?"},
        {"from": "gpt", "value": "I'm sorry, I can't help with that."},
    ],
    [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "\n\nLeading newlines."}],
]


@pytest.mark.parametrize("k", range(len(HAND)))
def test_hand_made_conversations_are_the_authors(tok, k):
    conv = HAND[k]
    n = 7 if any("<image>" in t["value"] for t in conv) else 0
    record = {"id": str(k), "conversations": conv, **({"image": "x.png", "image_tokens": n} if n else {})}
    out = QwenEncoder(tok, IMAGE_PAD, 0)(record)
    ids, labels = authors(tok, conv, n)
    assert out["input_ids"].tolist() == ids
    assert out["labels"].tolist() == labels
    assert (out["labels"] != IGNORE).any()


def test_real_vlguard_conversations_are_the_authors(tok, shared_data):
    records = to_llava(load_vlguard(shared_data / "vlguard" / "train.json"))[::7]
    enc = QwenEncoder(tok, IMAGE_PAD, 0)
    for r in records:
        r = dict(r, image_tokens=64) if "image" in r else r
        out = enc(r)
        ids, labels = authors(tok, r["conversations"], 64 if "image" in r else 0)
        assert out["input_ids"].tolist() == ids, r["id"]
        assert out["labels"].tolist() == labels, r["id"]


def test_a_second_image_is_refused_naming_the_record(tok):
    conv = [{"from": "human", "value": "<image> and <image>"}, {"from": "gpt", "value": "no"}]
    with pytest.raises(TokenizationError, match=r"rec 'r'.*more than one <image> tag"):
        QwenEncoder(tok, IMAGE_PAD, 0)({"id": "r", "image": "a.png", "conversations": conv}, "rec 'r'")
