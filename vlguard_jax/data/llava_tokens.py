"""Conversation -> (input_ids, labels), by LLaVA-1.5's rule (`preprocess_v1` with
`tokenizer_image_token`).

- The prompt is rendered with the template, split on `<image>`, each chunk tokenized with BOS and
  the BOS stripped from all but the first; each tag becomes `num_image_tokens` copies of
  `image_token_index` (llava-hf's expanded form).
- Labels supervise each assistant reply and the `</s>` that ends it; everything else is IGNORE.
- Ids are built turn by turn: each turn boundary's prefix must tokenize to a prefix of the whole
  prompt's ids.
- A sample LLaVA would not train on as a conversation raises `TokenizationError` naming it: turns
  that do not alternate (LLaVA asserts), an empty message or a trailing user turn, text holding
  `</s>` or ` ASSISTANT: ` (LLaVA's round split goes wrong), or a tokenizer merging across a turn
  boundary (LLaVA's lengths disagree). LLaVA masks such samples whole and goes on; the store
  (`data.on_bad_record`) raises or skips and lists them.
- Truncation to `max_length`, of the sequence with its image tokens expanded, as LLaVA truncates
  the embedded sequence: a sample keeps its first `max_length` positions even where that cuts its
  image tokens or leaves no supervised token (which then costs no loss). `Encoder` counts them.
- A text-only record is tokenized as LLaVA tokenizes it: without the `<image>` token, which is a
  special token only in the converted checkpoint's tokenizer, so a literal `<image>` in its text
  is ordinary text (`plain_tokenizer`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Any

import numpy as np
import tokenizers
import transformers

from vlguard_jax.data import tokenization
from vlguard_jax.data.conversation import IMAGE_TAG, Template, render, turns
from vlguard_jax.data.tokenization import IGNORE, TokenizationError, tokenize_with_images
from vlguard_jax.errors import InputError

# LLaVA's conversation templates, exactly: `vicuna_v1` (training) and `llava_v1` (the VLGuard
# evaluation), alike but for the system prompt.
VICUNA_V1 = "vicuna_v1"
LLAVA_V1 = "llava_v1"
TEMPLATES = {
    VICUNA_V1: Template(
        VICUNA_V1,
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the user's questions.",
    ),
    LLAVA_V1: Template(
        LLAVA_V1,
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the human's questions.",
    ),
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise InputError(f"unknown template {name!r}; choose from {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def plain_tokenizer(tokenizer) -> Any:
    """The tokenizer without `<image>` as an added token: the base LLM's (Vicuna's), which LLaVA
    tokenizes text-only records with. Ids are unchanged (the token was appended last)."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["content"] != IMAGE_TAG]
    plain = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer.from_str(json.dumps(data)))
    plain.bos_token_id, plain.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    plain.unk_token_id = tokenizer.unk_token_id
    return tokenization.keep_rule(tokenizer, plain)


def segments(template, msgs: list[tuple[int, str]]) -> list[tuple[str, bool]]:
    """The rendered prompt cut at turn boundaries, built piece by piece as `render` builds it:
    (text, supervised) pieces whose concatenation is `render(template, msgs)`. A supervised piece
    is " reply</s>"; the rest is system and user text up to and including the `ASSISTANT:` tag."""
    out, pending = [], template.system + template.sep
    for role, message in msgs:
        name = template.roles[role]
        if role == 0:
            pending += f"{name}: {message}{template.sep}"
        else:
            out += [(pending + f"{name}:", False), (f" {message}{template.sep2}", True)]
            pending = ""
    if pending:
        out.append((pending, False))
    return out


def llava_rounds_fault(template, msgs: list[tuple[int, str]]) -> str | None:
    """Why LLaVA's `preprocess_v1` would not read this conversation's replies as its replies, or
    None. It splits the prompt on `</s>` into rounds and each round on ` ASSISTANT: `; a sample
    whose split is not one round per exchange, each cut in two, is masked whole (or, where a
    message fakes a whole round, supervised on text that is no reply)."""
    for i, (role, message) in enumerate(msgs):
        if not message.strip():
            return f"turn {i}: empty {'assistant reply' if role else 'user text'}"
    if msgs[-1][0] != 1:
        return f"turn {len(msgs) - 1}: the conversation ends with a user turn, not a reply"
    sep = template.sep + template.roles[1] + ": "
    rounds = render(template, msgs).split(template.sep2)
    pieces = segments(template, msgs)
    for k in range(len(pieces) // 2):
        instruction, reply = pieces[2 * k][0], pieces[2 * k + 1][0][1 : -len(template.sep2)]
        parts = rounds[k].split(sep) if k < len(rounds) else []
        if parts != [instruction[: -len(sep) + 1], reply]:
            return (
                f"exchange {k} (turns {2 * k}-{2 * k + 1}): its text holds {template.sep2!r} or "
                f"{sep.strip()!r}, which LLaVA's preprocess_v1 reads as a turn boundary"
            )
    return None


def checked_pieces(conversations: list[dict], template, sample: str, image: bool = True) -> list[tuple[str, bool]]:
    """The conversation's turn pieces (`segments`), or TokenizationError for a sample LLaVA would
    not train on as a conversation."""
    try:
        msgs = turns(conversations, image)
    except ValueError as e:
        raise TokenizationError(sample, str(e)) from None
    if not msgs:
        raise TokenizationError(sample, "no turns")
    fault = llava_rounds_fault(template, msgs)
    if fault:
        raise TokenizationError(sample, fault)
    return segments(template, msgs)


def encode(
    tokenizer,
    conversations: list[dict],
    *,
    template=VICUNA_V1,
    image_token_index: int,
    num_image_tokens: int,
    sample: str = "<sample>",
    image: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) as int32 arrays, untruncated, by the turn-by-turn rule: each turn
    boundary's prefix must tokenize to a prefix of the whole prompt's ids. A sample LLaVA would
    mask raises TokenizationError. `image` False: a text-only record (tags stay text; pass the
    `plain_tokenizer`)."""
    template = get_template(template) if isinstance(template, str) else template
    pieces = checked_pieces(conversations, template, sample, image)
    whole = tokenize_with_images(tokenizer, "".join(t for t, _ in pieces), image_token_index, num_image_tokens, image)
    labels = np.full(len(whole), IGNORE, np.int32)
    prefix, start = "", 0
    for k, (text, supervised) in enumerate(pieces):
        prefix += text
        ids = (
            whole
            if k == len(pieces) - 1
            else tokenize_with_images(tokenizer, prefix, image_token_index, num_image_tokens, image)
        )
        if ids != whole[: len(ids)] or len(ids) < start:
            raise TokenizationError(
                sample,
                f"tokens of the prompt up to turn piece {k} ({text[-40:]!r}) are not a prefix "
                "of the whole prompt's tokens; this tokenizer merges across a turn boundary",
            )
        if supervised:
            labels[start : len(ids)] = whole[start : len(ids)]
        start = len(ids)
    whole = np.asarray(whole, np.int32)
    if image:
        labels[whole == image_token_index] = IGNORE  # an image in a reply is no target (LLaVA's rule)
    return whole, labels


def encode_batch(
    tokenizer, samples: list[list[tuple[str, bool]]], image_token_index: int, num_image_tokens: int | list[int]
) -> list:
    """(input_ids, labels) per sample's turn pieces, each prompt tokenized once: one call of a fast
    tokenizer over every chunk of the batch. Each turn boundary is found among the tokens through
    the encoding's character map, and the tokens from a reply piece's boundary to the next one's
    are supervised. A token that crosses a boundary gives, instead of arrays, the index of the
    piece it starts in: there the turn-by-turn rule must decide. Equal to `encode` wherever no
    token crosses a boundary (tested on every real VLGuard training sample). `num_image_tokens`:
    one count for every image, or one per sample."""
    chunks, owner = [], []
    for s, pieces in enumerate(samples):
        at = 0
        for c in "".join(t for t, _ in pieces).split(IMAGE_TAG):
            chunks.append(c)
            owner.append((s, at))
            at += len(c) + len(IMAGE_TAG)
    parts: list[list] = [[] for _ in samples]
    for e, (s, at), c in zip(tokenization.encode_batch(tokenizer, chunks), owner, chunks):
        parts[s].append((e, at, len(c)))
    counts = num_image_tokens if isinstance(num_image_tokens, list) else [num_image_tokens] * len(samples)
    return [
        _one(pieces, chunk_parts, tokenizer.bos_token_id, image_token_index, n)
        for pieces, chunk_parts, n in zip(samples, parts, counts)
    ]


def _one(pieces, chunk_parts, bos, image_token_index, num_image_tokens):
    bounds = np.cumsum([len(t) for t, _ in pieces])[:-1].tolist()  # where pieces 1.. start
    first_ids = chunk_parts[0][0].ids
    skip = 1 if first_ids and first_ids[0] == bos else 0
    ids, n, starts, images, b = ([bos] if skip else []), skip, [], [], 0
    for k, (e, at, length) in enumerate(chunk_parts):
        if k:
            ids += [image_token_index] * num_image_tokens
            images.append((n, n + num_image_tokens))
            n += num_image_tokens
        while b < len(bounds) and bounds[b] <= at + length:
            t, crosses = _token_at(e, bounds[b] - at, length)
            if crosses:
                return b
            starts.append(n + t - skip)
            b += 1
        if b < len(bounds) and bounds[b] < at + length + len(IMAGE_TAG):
            return b  # a boundary inside an image tag
        chunk_ids = e.ids
        ids += chunk_ids[skip:]
        n += len(chunk_ids) - skip
    ids = np.asarray(ids, np.int32)
    labels = np.full(len(ids), IGNORE, np.int32)
    edges = [0] + starts + [len(ids)]
    for k, (_, reply) in enumerate(pieces):
        if reply:
            labels[edges[k] : edges[k + 1]] = ids[edges[k] : edges[k + 1]]
    labels[:skip] = IGNORE
    for i, j in images:
        labels[i:j] = IGNORE
    return ids, labels


def _token_at(encoding, p: int, length: int) -> tuple[int, bool]:
    """(index of the first token at or after character p, whether a token starts before p and
    covers it). Characters no token covers (a dropped space) are stepped over."""
    for q in range(p, length):
        t = encoding.char_to_token(q)
        if t is not None:
            return t, encoding.token_to_chars(t)[0] < p
    return len(encoding.ids), False


@dataclasses.dataclass
class Encoder:
    """Tokenizes records for training and counts what `max_length` cuts (`truncated`); it drops
    nothing (a sample LLaVA would mask raises TokenizationError).

    `encode_many` tokenizes a batch at once with a fast tokenizer (`encode_batch`), and checks
    every `exact_every`-th sample against the turn-by-turn rule (`encode`): a disagreement is an
    error, loud, whatever `on_bad_record` says."""

    tokenizer: object
    image_token_index: int
    num_image_tokens: int
    max_length: int = 2048
    template: str = VICUNA_V1
    exact_every: int = 1000
    truncated: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    _seen: int = 0
    _plain: object = None

    def _tokenizer_for(self, record: dict):
        if "image" in record or not any(IMAGE_TAG in t["value"] for t in record["conversations"]):
            return self.tokenizer
        if self._plain is None:
            self._plain = plain_tokenizer(self.tokenizer)
        return self._plain

    def image_tokens(self, record: dict) -> int:
        """The image tokens of `record`'s image: its own count where the store found one (a family
        whose images differ in shape: `image_tokens`), else the family's."""
        return int(record.get("image_tokens", self.num_image_tokens))

    def __call__(self, record: dict, where: str | None = None) -> dict:
        """{'input_ids', 'labels'} (int32, length <= max_length). A sample LLaVA would mask raises
        TokenizationError naming `where`."""
        ids, labels = encode(
            self._tokenizer_for(record),
            record["conversations"],
            template=self.template,
            image_token_index=self.image_token_index,
            num_image_tokens=self.image_tokens(record),
            sample=where or f"sample {record.get('id', '<no id>')!r}",
            image="image" in record,
        )
        return self.fit(ids, labels)

    def encode_each(self, records: list[dict], wheres: list[str]) -> list:
        """Per record, one at a time: the dict `__call__` gives, or the TokenizationError it raises."""
        out = []
        for r, w in zip(records, wheres):
            try:
                out.append(self(r, w))
            except TokenizationError as e:
                out.append(e)
        return out

    def encode_many(self, records: list[dict], wheres: list[str]) -> list:
        """Per record: the dict `__call__` gives, or the TokenizationError it would raise."""
        if not getattr(self.tokenizer, "is_fast", False):
            return self.encode_each(records, wheres)
        template = get_template(self.template)
        out: list = [None] * len(records)
        todo: list = []
        for k, (r, w) in enumerate(zip(records, wheres)):
            if self._tokenizer_for(r) is not self.tokenizer:  # a literal tag: the one-pass path splits on it
                try:
                    out[k] = self(r, w)
                except TokenizationError as e:
                    out[k] = e
                continue
            try:
                todo.append((k, checked_pieces(r["conversations"], template, w)))
            except TokenizationError as e:
                out[k] = e
        counts = [self.image_tokens(records[k]) for k, _ in todo]
        encoded = encode_batch(self.tokenizer, [p for _, p in todo], self.image_token_index, counts)
        for (k, _), result in zip(todo, encoded):
            if isinstance(result, int):  # a token across a turn boundary: the rule itself decides
                try:
                    out[k] = self(records[k], wheres[k])
                except TokenizationError as e:
                    out[k] = e
                continue
            self._seen += 1
            if self._seen % self.exact_every == 1 or self.exact_every == 1:
                self._agree(records[k], wheres[k], result)
            out[k] = self.fit(*result)
        return out

    def _agree(self, record: dict, where: str, fast) -> None:
        ids, labels = encode(
            self.tokenizer,
            record["conversations"],
            template=self.template,
            image_token_index=self.image_token_index,
            num_image_tokens=self.image_tokens(record),
            sample=where,
            image="image" in record,
        )
        if not (np.array_equal(ids, fast[0]) and np.array_equal(labels, fast[1])):
            raise TokenizationError(
                where,
                "the one-pass tokenization disagrees with the turn-by-turn rule on this "
                "sample; this tokenizer's offsets cannot be trusted for labels",
            )

    def fit(self, ids: np.ndarray, labels: np.ndarray) -> dict:
        """The first `max_length` positions, as LLaVA keeps them; what was cut is counted."""
        if len(ids) > self.max_length:
            self.truncated["at max_length"] += 1
            images = np.flatnonzero(ids == self.image_token_index)
            if len(images) and images[-1] >= self.max_length:
                self.truncated["image tokens cut"] += 1
            ids, labels = ids[: self.max_length], labels[: self.max_length]
            if not (labels != IGNORE).any():
                self.truncated["no supervised token left (no loss)"] += 1
        return {"input_ids": ids, "labels": labels}
