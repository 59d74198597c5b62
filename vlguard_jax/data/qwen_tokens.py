"""A LLaVA-format conversation -> (input_ids, labels) as Qwen2.5-VL's own fine-tuning code builds
them (QwenLM/Qwen2.5-VL, `qwen-vl-finetune/qwenvl/data/data_processor.py`,
`preprocess_qwen_visual`), the rule LLaMA-Factory's `qwen2_vl` template also follows.

- Each user turn is split at its `<image>` tag; the text on each side is stripped and the empty
  side dropped, and the image goes where its tag was, as `<|vision_start|>` + one
  `<|image_pad|>` per merged token + `<|vision_end|>`. Replies are kept as they are.
- The chat template renders the whole conversation, its default system prompt first
  (`families.qwen2_5_vl.SYSTEM`); the text is tokenized once.
- Labels: each reply, its `<|im_end|>` and the newline after it (their rule supervises from two
  tokens after `assistant` through one token after `<|im_end|>`); all else is IGNORE. A token is
  supervised when it starts inside a reply's span.
- One image per record; a record whose turns do not alternate human, gpt is refused.
"""

from __future__ import annotations

import numpy as np

from vlguard_jax.data import tokenization
from vlguard_jax.data.conversation import IMAGE_TAG, turns
from vlguard_jax.data.llava_tokens import Encoder
from vlguard_jax.data.tokenization import IGNORE, TokenizationError
from vlguard_jax.errors import InputError

TEMPLATE = "qwen2_5_vl"  # data.template's name for this rule
SYSTEM = "You are a helpful assistant."
VISION = f"<|vision_start|>{IMAGE_TAG}<|vision_end|>"


def user_text(text: str) -> str:
    """A user turn's content as the chat template writes it (module doc)."""
    parts = [p.strip() for p in text.split(IMAGE_TAG)]
    return VISION.join(parts) if len(parts) > 1 else parts[0]


def pieces(conversations: list[dict]) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, supervised) pieces; ValueError for a malformed one."""
    try:
        msgs = turns(conversations, image=False)
    except InputError as e:
        raise ValueError(str(e)) from None
    if not msgs or msgs[-1][0] != 1:
        raise ValueError("a conversation is human and gpt turns, ending with gpt")
    if sum(text.count(IMAGE_TAG) for _, text in msgs) > 1:
        raise ValueError(f"more than one {IMAGE_TAG} tag: a Qwen2.5-VL record takes one image")
    out, pending = [], f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    for role, text in msgs:
        if role == 0:
            pending += f"<|im_start|>user\n{user_text(text)}<|im_end|>\n"
        else:
            out += [(pending + "<|im_start|>assistant\n", False), (f"{text}<|im_end|>\n", True)]
            pending = ""
    return out


def encode(tokenizer, conversations: list[dict], image_token_index: int, num_image_tokens: int) -> tuple:
    """(input_ids, labels), int32, untruncated."""
    parts = pieces(conversations)
    text = "".join(t for t, _ in parts)
    starts = np.cumsum([0] + [len(t) for t, _ in parts])
    chunks = text.split(IMAGE_TAG)
    ids: list[int] = []
    labels: list[int] = []
    at = 0
    for k, (chunk, e) in enumerate(zip(chunks, tokenization.encode_batch(tokenizer, chunks, special=False))):
        if k:
            ids += [image_token_index] * num_image_tokens
            labels += [IGNORE] * num_image_tokens
            at += len(IMAGE_TAG)
        for token, (begin, _) in zip(e.ids, e.offsets):
            piece = int(np.searchsorted(starts, at + begin, side="right")) - 1
            ids.append(token)
            labels.append(token if parts[piece][1] else IGNORE)
        at += len(chunk)
    return np.asarray(ids, np.int32), np.asarray(labels, np.int32)


class QwenEncoder(Encoder):
    """`Encoder` (truncation at max_length, counted) with Qwen2.5-VL's rule."""

    def __call__(self, record: dict, where: str | None = None) -> dict:
        try:
            if "image" not in record and any(IMAGE_TAG in t["value"] for t in record["conversations"]):
                raise ValueError(f"an {IMAGE_TAG} tag in a record without an image")
            ids, labels = encode(
                self.tokenizer, record["conversations"], self.image_token_index, self.image_tokens(record)
            )
        except ValueError as e:
            raise TokenizationError(where or f"sample {record.get('id', '<no id>')!r}", str(e)) from None
        return self.fit(ids, labels)

    def encode_many(self, records: list[dict], wheres: list[str]) -> list:
        return self.encode_each(records, wheres)
