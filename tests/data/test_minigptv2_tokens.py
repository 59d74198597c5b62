"""MiniGPT-v2's training rule, on cases worked out from the authors' code: the first question
stripped of its tag and newlines inside `[INST] <Img><ImageHere></Img> Q  [/INST]` after one BOS,
each answer with `</s>` supervised, later questions as `<s>[INST] Q  [/INST]` masked."""

import numpy as np
import pytest

from tests import tiny
from vlguard_jax.data import minigptv2_tokens as mt
from vlguard_jax.data.tokenization import IGNORE, TokenizationError

IMG, N = 999, 4


@pytest.fixture(scope="module")
def tok():
    t = tiny.tokenizer(image_token=False)
    assert t("<s></s>", add_special_tokens=False).input_ids == [t.bos_token_id, t.eos_token_id]
    return t


def ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def conv(*texts):
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(texts)]


def test_one_exchange_with_an_image(tok):
    got, labels = mt.encode(tok, conv("<image>\nWhat is\nshown in the image?", "A red circle."), IMG, N, True)
    answer = ids(tok, "A red circle.</s>")
    prompt = ids(tok, "[INST] <Img>") + [IMG] * N + ids(tok, "</Img> What isshown in the image?  [/INST]")
    assert got.tolist() == [tok.bos_token_id, *prompt, *answer]
    assert labels.tolist() == [IGNORE] * (1 + len(prompt)) + answer
    assert answer[-1] == tok.eos_token_id and got.dtype == labels.dtype == np.int32


def test_later_questions_are_masked_and_start_with_bos(tok):
    texts = ("<image>\nWhat is shown?", "A red circle.", "And the square?", "It is blue.")
    got, labels = mt.encode(tok, conv(*texts), IMG, N, True)
    prompt = ids(tok, "[INST] <Img>") + [IMG] * N + ids(tok, "</Img> What is shown?  [/INST]")
    first, later, second = (
        ids(tok, "A red circle.</s>"),
        ids(tok, "<s>[INST] And the square?  [/INST]"),
        ids(tok, "It is blue.</s>"),
    )
    assert later[0] == tok.bos_token_id
    assert got.tolist() == [tok.bos_token_id, *prompt, *first, *later, *second]
    assert labels.tolist() == [IGNORE] * (1 + len(prompt)) + first + [IGNORE] * len(later) + second


def test_a_text_only_record_has_no_image_part(tok):
    got, _ = mt.encode(tok, conv("Tell me a story.", "Once upon a time."), IMG, N, False)
    assert got.tolist() == [
        tok.bos_token_id,
        *ids(tok, "[INST] Tell me a story.  [/INST]"),
        *ids(tok, "Once upon a time.</s>"),
    ]


def test_the_answers_are_cut_at_max_txt_len(tok):
    long = " ".join(["circle"] * (mt.MAX_TXT_LEN + 50))
    got, labels = mt.encode(tok, conv("<image>\nDescribe.", long), IMG, N, True)
    assert (labels != IGNORE).sum() == mt.MAX_TXT_LEN and labels[-1] != tok.eos_token_id  # cut, as theirs


def test_the_encoder_names_a_sample_it_cannot_read(tok):
    enc = mt.MiniGPTv2Encoder(tok, IMG, N, max_length=64, template=mt.TEMPLATE)
    with pytest.raises(TokenizationError, match="sample 'x': a conversation is human and gpt turns in pairs"):
        enc({"id": "x", "image": "a.png", "conversations": conv("<image>\nQ?")})
    out = enc.encode_many([{"id": "y", "image": "a.png", "conversations": conv("<image>\nQ?", "A.")}], ["y"])
    assert out[0]["input_ids"][0] == tok.bos_token_id and len(out[0]["input_ids"]) <= 64
