"""Token ids as the authors' environments made them, whatever the downloaded tokenizer's
`legacy` flag says and however transformers 5 rebuilds a Llama tokenizer.

Both families trained and evaluated with transformers 4.3x's slow (SentencePiece) `LlamaTokenizer`:
the text is split at special tokens (`<s>`, `</s>`, `<unk>`, added tokens; no whitespace is
stripped around them, as they are `AddedToken`s without lstrip/rstrip), and each chunk is
encoded by SentencePiece, which adds its dummy prefix `▁` and writes every space as `▁`.

- `sentencepiece` (MiniGPT-v2: transformers 4.30.0, which has no `legacy` flag): each chunk
  exactly as SentencePiece encodes it, so `<s>[INST]` is `<s>`, `▁[`, `INST`, `]`.
- `hf431` (LLaVA-1.5: transformers 4.31.0 with the checkpoint's `"legacy": false`): the same,
  except a chunk after a special token that does not start with a space loses the `▁` of its
  first piece (`tokenization_llama.py`'s `_tokenize`): the piece without it, or `<unk>` where the
  vocabulary has none, and a lone `▁` is dropped. So `</s>USER:` is `</s>`, `US`, `ER`, `:`.

transformers 5 instead prefixes only the first chunk (`legacy: false`) or every chunk
(`legacy: true`) through a `Metaspace` pre-tokenizer, which also drops a chunk's leading space
(` x` is `▁x`, where SentencePiece gives `▁`, `▁x`). A tokenizer set up here encodes through
SentencePiece's own normalisation (`Prepend("▁")`, then spaces as `▁`, per chunk, as Llama's
first fast tokenizers did), and `encode_batch` applies the 4.31 rule on top. Not reproduced:
4.31 also turns a literal `▁` in the text into a space.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tokenizers import normalizers

from vlguard_jax.data.conversation import IMAGE_TAG
from vlguard_jax.errors import UserError

RULES = ("sentencepiece", "hf431")
_RULE_ATTR = "vlguard_tokenization"
SPIECE = "▁"


def authors_tokenizer(tokenizer: Any, rule: str | None) -> Any:
    """`tokenizer`, set up to give `rule`'s ids (None: as loaded). It must be a SentencePiece-style
    BPE tokenizer (Llama's); the object is changed in place and returned."""
    if rule is None or tokenizer is None:
        return tokenizer
    if rule not in RULES:
        raise ValueError(f"tokenization rule {rule!r} is not one of {RULES}")
    backend = tokenizer.backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend(SPIECE), normalizers.Replace(" ", SPIECE)])
    backend.pre_tokenizer = None
    setattr(tokenizer, _RULE_ATTR, rule)
    return tokenizer


def rule_of(tokenizer: Any) -> str | None:
    return getattr(tokenizer, _RULE_ATTR, None)


def keep_rule(source: Any, tokenizer: Any) -> Any:
    """`tokenizer` (built from `source`'s backend) with `source`'s rule."""
    if rule_of(source) is not None:
        setattr(tokenizer, _RULE_ATTR, rule_of(source))
    return tokenizer


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One text's tokens where the 4.31 rule changed some: `ids` [n] and each token's character
    span `offsets` [n] in the text, with a tokenizers `Encoding`'s two lookups."""

    ids: list[int]
    offsets: list[tuple[int, int]]

    def char_to_token(self, q: int) -> int | None:
        for t, (a, b) in enumerate(self.offsets):
            if a <= q < b:
                return t
        return None

    def token_to_chars(self, t: int) -> tuple[int, int]:
        return self.offsets[t]


def encode_batch(tokenizer: Any, texts: list[str], special: bool = True) -> list:
    """Each text's tokens (a tokenizers `Encoding`, or an `Encoded` where the rule changed it):
    one pass of the fast tokenizer. `special`: with the tokenizer's BOS."""
    backend = tokenizer.backend_tokenizer
    out = backend.encode_batch(texts) if special else backend.encode_batch(texts, add_special_tokens=False)
    if rule_of(tokenizer) != "hf431":
        return out
    added = set(tokenizer.backend_tokenizer.get_added_tokens_decoder())
    return [_after_special(tokenizer, e, text, added) for e, text in zip(out, texts)]


def ids(tokenizer: Any, text: str, special: bool = True) -> list[int]:
    """One text's ids by the tokenizer's rule."""
    if rule_of(tokenizer) is None:
        return list((tokenizer(text) if special else tokenizer(text, add_special_tokens=False)).input_ids)
    return list(encode_batch(tokenizer, [text], special)[0].ids)


def _after_special(tokenizer, e, text: str, added: set[int]):
    """transformers 4.31's non-legacy rule on one encoding: the first piece of a chunk after a
    special token in the text (a span, not the BOS the template adds) loses its `▁`, unless the
    chunk starts with a space."""
    ids, offsets = list(e.ids), list(e.offsets)
    cut = [
        t
        for t in range(1, len(ids))
        if ids[t - 1] in added
        and ids[t] not in added
        and offsets[t - 1][1] > offsets[t - 1][0]
        and text[offsets[t - 1][1] : offsets[t - 1][1] + 1] != " "
    ]
    if not cut:
        return e
    pieces = tokenizer.backend_tokenizer
    for t in reversed(cut):
        piece = pieces.id_to_token(ids[t])
        if not piece.startswith(SPIECE):
            continue
        if piece == SPIECE:
            del ids[t], offsets[t]
        else:
            found = pieces.token_to_id(piece[1:])
            ids[t] = found if found is not None else tokenizer.unk_token_id
    return Encoded(ids, offsets)


IGNORE = -100


class TokenizationError(UserError, ValueError):
    """A sample its family's training rule would not train on as a conversation (LLaVA's
    `preprocess_v1` masks such a sample whole, or asserts); the message names the sample, `reason`
    says why."""

    def __init__(self, sample: str, reason: str):
        super().__init__(f"{sample}: {reason}")
        self.sample, self.reason = sample, reason


def tokenize_with_images(
    tokenizer, text: str, image_token_index: int, num_image_tokens: int, image: bool = True
) -> list[int]:
    """LLaVA's `tokenizer_image_token`, with each tag expanded to `num_image_tokens` ids; without
    `image`, the plain tokenization of the text (a text-only record)."""
    if not image:
        return ids(tokenizer, text)
    chunks = [ids(tokenizer, c) for c in text.split(IMAGE_TAG)]
    bos = tokenizer.bos_token_id
    offset = 1 if chunks and chunks[0] and chunks[0][0] == bos else 0
    out = [bos] if offset else []
    for i, chunk in enumerate(chunks):
        if i:
            out.extend([image_token_index] * num_image_tokens)
        out.extend(chunk[offset:])
    return out
