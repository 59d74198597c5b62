"""A small Llama-style tokenizer trained by project code (no download): sentencepiece-style
`▁` word boundaries, BPE with byte fallback, `<s>`/`</s>`/`<unk>`, and `<image>` as a special
token. Used by the demo and by tests that need a real Hugging Face tokenizer."""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaTokenizer

SPECIALS = ["<unk>", "<s>", "</s>"]
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]
IMAGE_TOKEN = "<image>"


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 512, image_token: bool = True) -> LlamaTokenizer:
    """Train BPE merges on `corpus` and wrap them in transformers' `LlamaTokenizer`.

    The ids of `<unk>`, `<s>`, `</s>` are 0, 1, 2 as in Llama; `<image>` is appended last."""
    if vocab_size < len(SPECIALS) + len(BYTE_TOKENS) + 1:
        raise ValueError(f"vocab_size {vocab_size} cannot hold the special and byte tokens")
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS + BYTE_TOKENS, show_progress=False)
    bpe.train_from_iterator(list(corpus), trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = LlamaTokenizer(vocab=model["vocab"], merges=merges, add_bos_token=True, add_eos_token=False)
    if image_token:
        tok.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return tok
