"""Ids as the authors' environments made them, with Llama's real vocabulary (tests/llama_vocab.py).

The pieces are worked out by hand from SentencePiece's rule (a `▁` before each chunk, spaces as
`▁`) and transformers 4.30/4.31's `LlamaTokenizer` (chunks split at special tokens); each piece's
id is read from the vocabulary, and the few the issue quotes are written as numbers.
"""

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from tests import llama_vocab
from vlguard_jax.data import minigptv2_tokens, tokenization
from vlguard_jax.data.conversation import render, turns
from vlguard_jax.data.convert_vlguard import to_llava
from vlguard_jax.data.llava_tokens import Encoder, encode, get_template
from vlguard_jax.data.tokenization import IGNORE, tokenize_with_images
from vlguard_jax.families import LLAVA, MINIGPTV2
from vlguard_jax.generate.prompts import prompt_text

IMG, N = 32000, 3  # the image placeholder id (outside the vocabulary) and tokens per image


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The Hub's layout: `"legacy": false`, as Llama-2-chat's and Vicuna v1.5's files say."""
    tmp = tmp_path_factory.mktemp("llama-vocab")
    vocab, merges = llama_vocab.fetch(tmp)
    return llama_vocab.folder(tmp / "hub", vocab, merges, legacy=False)


def load(folder, rule):
    return tokenization.authors_tokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True), rule)


@pytest.fixture(scope="module")
def minigpt(hub):
    return load(hub, MINIGPTV2.tokenization)


@pytest.fixture(scope="module")
def llava(hub):
    return load(hub, LLAVA.tokenization)


def pieces(tok, *names):
    vocab = json.loads(tok.backend_tokenizer.to_str())["model"]["vocab"]
    return [vocab[n] for n in names]


# llama-tokenizer-js's own cases (ids from Meta's SentencePiece model): the vocabulary is LLaMA's.
JS_CASES = {
    "grabbed": [1, 2646, 1327, 287],
    " grabbed": [1, 29871, 2646, 1327, 287],
    "           grabbed": [1, 9651, 2646, 1327, 287],
    "\n": [1, 29871, 13],
    " \n": [1, 259, 13],
    "ax\n####\nboo": [1, 4853, 13, 4136, 13, 833, 29877],
    "🦙Ꙋ": [1, 29871, 243, 162, 169, 156, 237, 156, 141],
}


@pytest.mark.parametrize("text", sorted(JS_CASES))
def test_sentencepiece_rule_gives_metas_ids(minigpt, text):
    assert tokenization.ids(minigpt, text) == JS_CASES[text]


def test_transformers_5_as_loaded_is_not_sentencepiece(hub):
    tok = AutoTokenizer.from_pretrained(hub, local_files_only=True)
    assert tok(" grabbed").input_ids == [1, 2646, 1327, 287]  # the leading space is lost
    assert tok("<s>[INST]", add_special_tokens=False).input_ids == [1, 29961, 25580, 29962]  # `[` without `▁`


def test_minigptv2_prompt_starts_as_the_authors(minigpt):
    """`<s>[INST] <Img><ImageHere></Img> Q [/INST]`, BOS added: two BOS, then `▁[` (518)."""
    text = prompt_text("Is it safe?", True, "minigptv2")
    ids = tokenize_with_images(minigpt, text, IMG, N)
    assert ids[:5] == [1, 1, 518, 25580, 29962]
    first = pieces(minigpt, "▁[", "INST", "]", "▁<", "Img", ">")
    second = pieces(minigpt, "▁</", "Img", ">", "▁Is", "▁it", "▁safe", "?", "▁[", "/", "INST", "]")
    assert ids == [1, 1, *first, *[IMG] * N, *second]


def test_minigptv2_second_question_after_eos(minigpt):
    conv = [
        {"from": "human", "value": "<image>\nQ one?"},
        {"from": "gpt", "value": "A one."},
        {"from": "human", "value": "Q two?"},
        {"from": "gpt", "value": "A two."},
    ]
    ids, labels = minigptv2_tokens.encode(minigpt, conv, IMG, N, image=True)
    answer = pieces(minigpt, "▁A", "▁one", ".") + [2]
    question = [1, 518, 25580, 29962] + pieces(minigpt, "▁Q", "▁two", "?", "▁", "▁[", "/", "INST", "]")
    start = list(ids).index(2) - 3
    assert list(ids[start : start + len(answer) + len(question)]) == answer + question
    assert list(labels[start : start + len(answer)]) == answer
    assert (labels[start + len(answer) : start + len(answer) + len(question)] == IGNORE).all()


def two_turns():
    return [
        {"from": "human", "value": "<image>\nWhat is it?"},
        {"from": "gpt", "value": "A cat."},
        {"from": "human", "value": "Is it safe?"},
        {"from": "gpt", "value": "Yes."},
    ]


def test_llava_text_after_eos_loses_its_prefix(llava):
    """4.31, legacy false: `</s>USER:` is `</s>`, `US`, `ER`, `:`; the first `USER:` keeps `▁US`."""
    ids, labels = encode(llava, two_turns(), image_token_index=IMG, num_image_tokens=N)
    ids = list(ids)
    after = ids.index(2)
    assert ids[after : after + 4] == [2, *pieces(llava, "US", "ER", ":")] == [2, 3308, 1001, 29901]
    assert pieces(llava, "▁US", "ER")[0] in ids[:after]
    supervised = [int(t) for t in labels if t != IGNORE]
    assert supervised == pieces(llava, "▁A", "▁cat", ".") + [2] + pieces(llava, "▁Yes", ".") + [2]


def test_llava_labels_equal_llavas_round_arithmetic(llava):
    """`preprocess_v1` as LLaVA-1.5 ran it (4.31: no length correction): each round's length,
    tokenized alone with its BOS, covers its tokens in the whole prompt."""
    text = render(get_template("vicuna_v1"), turns(two_turns()))
    ids, labels = encode(llava, two_turns(), image_token_index=IMG, num_image_tokens=N)
    n = lambda s: len(tokenize_with_images(llava, s, IMG, N))
    target, cur, sep = np.array(ids), 1, " ASSISTANT: "
    target[:1] = IGNORE
    for rou in text.split("</s>")[:-1]:
        parts = rou.split(sep)
        target[cur : cur + n(parts[0] + sep) - 2] = IGNORE
        cur += n(rou)
    assert cur == len(ids)
    np.testing.assert_array_equal(labels, target)


def test_one_pass_equals_the_rule_with_the_real_vocabulary(llava, shared_data):
    records = json.loads((shared_data / "vlguard" / "train.json").read_text())
    rows = [r for r in to_llava(records) if len(r["conversations"]) > 2][:40]
    assert rows, "VLGuard train has two-turn conversations"
    enc = Encoder(llava, IMG, N, max_length=4096, exact_every=1)
    out = enc.encode_many(rows, [r["id"] for r in rows])  # each checked against the turn-by-turn rule
    for r, o in zip(rows, out):
        assert isinstance(o, dict), o
        assert 3308 in o["input_ids"].tolist(), r["id"]  # `US` after the first reply's `</s>`
