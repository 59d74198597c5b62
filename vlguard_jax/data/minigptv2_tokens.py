"""A LLaVA-format conversation -> (input_ids, labels) as MiniGPT-v2 trains on it (Vision-CAIR/
MiniGPT-4: `LlavaConversationDataset`, then `MiniGPTBase.preparing_embedding`, `prompt_wrap`,
`tokenize_conversation` and `forward`).

- The first question loses its `<image>` tag and every newline, and becomes
  `<Img><ImageHere></Img> {question} `; later questions get a trailing space. Each is wrapped
  as `[INST] {} [/INST]`, so two spaces precede `[/INST]`.
- The sequence is a BOS, then the first prompt (split at the image: each side tokenized without
  special tokens, the image between as `num_image_tokens` copies of `image_token_index`), then
  each answer followed by `</s>`, and each later question as `<s>[INST] ... [/INST]`, all
  tokenized without special tokens (the tokenizer reads `<s>` and `</s>` as BOS and EOS).
- Labels: the answers and their `</s>`; the BOS, the prompts and the later questions are IGNORE.
- As the authors', the prompt is cut at MAX_CONTEXT_LEN tokens and the answer part at
  MAX_TXT_LEN (`minigptv2_finetune.yaml`'s max_txt_len) before they are joined.
- A record without an image (their conversation data always has one) is read the same way
  without the `<Img>...</Img>` part: an assumption.
"""

from __future__ import annotations

import numpy as np

from vlguard_jax.data import tokenization
from vlguard_jax.data.conversation import IMAGE_TAG, turns
from vlguard_jax.data.llava_tokens import Encoder
from vlguard_jax.data.tokenization import IGNORE, TokenizationError
from vlguard_jax.errors import InputError

MAX_TXT_LEN = 1024
MAX_CONTEXT_LEN = 3800
TEMPLATE = "minigptv2"  # data.template's name for this rule


def _ids(tokenizer, text: str) -> list[int]:
    return tokenization.ids(tokenizer, text, special=False)


def encode(
    tokenizer, conversations: list[dict], image_token_index: int, num_image_tokens: int, image: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels), int32. Turns that do not alternate human, gpt (ending with gpt), or an
    empty one, raise ValueError (the caller names the sample)."""
    try:
        msgs = turns(conversations, image=False)
    except InputError as e:
        raise ValueError(str(e)) from None
    if not msgs or len(msgs) % 2 or any(not str(text).strip() for _, text in msgs):
        raise ValueError("a conversation is human and gpt turns in pairs, none empty, ending with gpt")
    questions, answers = [t for r, t in msgs if r == 0], [t for r, t in msgs if r == 1]
    first = questions[0].replace(IMAGE_TAG, "").replace("\n", "").strip()
    prompt = f"[INST] {f'<Img>{IMAGE_TAG}</Img> ' if image else ''}{first}  [/INST]"
    if image:
        before, after = prompt.split(IMAGE_TAG)
        context = _ids(tokenizer, before) + [image_token_index] * num_image_tokens + _ids(tokenizer, after)
    else:
        context = _ids(tokenizer, prompt)
    context = context[:MAX_CONTEXT_LEN]
    ids: list[int] = []
    labels: list[int] = []
    eos, bos = tokenizer.eos_token, tokenizer.bos_token
    for i, answer in enumerate(answers):
        reply = _ids(tokenizer, answer + eos)
        ids += reply
        labels += reply
        if i + 1 < len(questions):
            question = _ids(tokenizer, f"{bos}[INST] {questions[i + 1]}  [/INST]")
            ids += question
            labels += [IGNORE] * len(question)
    ids, labels = ids[:MAX_TXT_LEN], labels[:MAX_TXT_LEN]
    full = [tokenizer.bos_token_id, *context, *ids]
    return np.asarray(full, np.int32), np.asarray([IGNORE] * (1 + len(context)) + labels, np.int32)


class MiniGPTv2Encoder(Encoder):
    """`Encoder` (truncation at max_length, counted) with MiniGPT-v2's rule, one record at a time."""

    def __call__(self, record: dict, where: str | None = None) -> dict:
        try:
            ids, labels = encode(
                self.tokenizer,
                record["conversations"],
                self.image_token_index,
                self.image_tokens(record),
                "image" in record,
            )
        except ValueError as e:
            raise TokenizationError(where or f"sample {record.get('id', '<no id>')!r}", str(e)) from None
        return self.fit(ids, labels)

    def encode_many(self, records: list[dict], wheres: list[str]) -> list:
        return self.encode_each(records, wheres)  # no one-pass form of this rule
