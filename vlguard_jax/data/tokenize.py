"""Conversation -> (input_ids, labels), by LLaVA-1.5's rule (`preprocess_v1` with
`tokenizer_image_token`).

- The prompt is rendered with the template, split on `<image>`, each chunk tokenized with BOS and
  the BOS stripped from all but the first; each tag becomes `num_image_tokens` copies of
  `image_token_index` (llava-hf's expanded form).
- Labels supervise each assistant reply and the `</s>` that ends it; everything else is IGNORE.
- Ids are built turn by turn: each turn boundary's prefix must tokenize to a prefix of the whole
  prompt's ids. A mismatch is an error naming the sample (LLaVA masks such a sample silently).
- Truncation to `max_length`; a sample with no supervised token left, or whose image tokens would
  be cut, is dropped and counted by `Encoder`.
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np

from vlguard_jax.data.conversation import IMAGE_TAG, get_template, render, turns

IGNORE = -100


class TokenizationError(ValueError):
    """The turn-by-turn ids disagree with the whole prompt's ids; names the sample."""


def tokenize_with_images(tokenizer, text: str, image_token_index: int, num_image_tokens: int) -> list[int]:
    """LLaVA's `tokenizer_image_token`, with each tag expanded to `num_image_tokens` ids."""
    chunks = [tokenizer(c).input_ids for c in text.split(IMAGE_TAG)]
    bos = tokenizer.bos_token_id
    offset = 1 if chunks and chunks[0] and chunks[0][0] == bos else 0
    ids = [bos] if offset else []
    for i, chunk in enumerate(chunks):
        if i:
            ids.extend([image_token_index] * num_image_tokens)
        ids.extend(chunk[offset:])
    return ids


def segments(template, conversations: list[dict]) -> list[tuple[str, bool]]:
    """The rendered prompt cut at turn boundaries: (text, supervised) pieces whose concatenation is
    `render(template, ...)`. A supervised piece is " reply</s>"; the rest is system and user text
    up to and including the `ASSISTANT:` tag."""
    msgs = turns(conversations)
    text = render(template, msgs)
    out, start = [], 0
    for i, (role, message) in enumerate(msgs):
        if role == 0:
            continue
        if not message:
            raise ValueError(f"turn {i}: empty assistant reply")
        tag_end = text.index(f"{template.roles[1]}:", start) + len(template.roles[1]) + 1
        reply_end = tag_end + 1 + len(message) + len(template.sep2)
        if text[tag_end:reply_end] != " " + message + template.sep2:
            raise AssertionError(f"template rendering out of step at turn {i}")
        out += [(text[start:tag_end], False), (text[tag_end:reply_end], True)]
        start = reply_end
    if start < len(text):
        out.append((text[start:], False))
    return out


def encode(tokenizer, conversations: list[dict], *, template="vicuna_v1", image_token_index: int,
           num_image_tokens: int, sample: str = "<sample>") -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) as int32 arrays, untruncated."""
    template = get_template(template) if isinstance(template, str) else template
    pieces = segments(template, conversations)
    whole = tokenize_with_images(tokenizer, "".join(t for t, _ in pieces), image_token_index,
                                 num_image_tokens)
    labels = np.full(len(whole), IGNORE, np.int32)
    prefix, start = "", 0
    for k, (text, supervised) in enumerate(pieces):
        prefix += text
        ids = whole if k == len(pieces) - 1 else tokenize_with_images(
            tokenizer, prefix, image_token_index, num_image_tokens)
        if ids != whole[:len(ids)] or len(ids) < start:
            raise TokenizationError(
                f"{sample}: tokens of the prompt up to turn piece {k} ({text[-40:]!r}) are not a "
                f"prefix of the whole prompt's tokens; this tokenizer merges across a turn boundary")
        if supervised:
            labels[start:len(ids)] = whole[start:len(ids)]
        start = len(ids)
    return np.asarray(whole, np.int32), labels


@dataclasses.dataclass
class Encoder:
    """Tokenizes records for training and counts what it drops (`drops`), never silently."""
    tokenizer: object
    image_token_index: int
    num_image_tokens: int
    max_length: int = 2048
    template: str = "vicuna_v1"
    drops: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def __call__(self, record: dict) -> dict | None:
        """{'input_ids', 'labels'} (int32, length <= max_length), or None for a dropped sample."""
        sid = record.get("id", "<no id>")
        if any(t["from"] == "gpt" and not t["value"].strip() for t in record["conversations"]):
            self.drops["empty assistant reply"] += 1
            return None
        ids, labels = encode(self.tokenizer, record["conversations"], template=self.template,
                             image_token_index=self.image_token_index,
                             num_image_tokens=self.num_image_tokens, sample=f"sample {sid!r}")
        images = np.flatnonzero(ids == self.image_token_index)
        if len(images) and images[-1] >= self.max_length:
            self.drops["image tokens cut by max_length"] += 1
            return None
        ids, labels = ids[:self.max_length], labels[:self.max_length]
        if not (labels != IGNORE).any():
            self.drops["no supervised token within max_length"] += 1
            return None
        return {"input_ids": ids, "labels": labels}
