"""Labels by LLaVA's rule, checked against two independent references: character spans of the
replies (via the fast tokenizer's offsets) and LLaVA's own round-length arithmetic."""

import re

import numpy as np
import pytest

from tests import tiny
from vlguard_jax.data.conversation import render, turns
from vlguard_jax.data.llava_tokens import Encoder, encode, encode_batch, get_template
from vlguard_jax.data.tokenization import IGNORE, TokenizationError, tokenize_with_images

N_IMG = 5


@pytest.fixture(scope="module")
def tok():
    return tiny.tokenizer()


def conv(*pairs, image=True):
    out = []
    for i, (q, a) in enumerate(pairs):
        out += [{"from": "human", "value": ("<image>" if image and i == 0 else "") + q}, {"from": "gpt", "value": a}]
    return out


SAMPLES = {
    "one turn": conv(("What is shown in the image?", "A red circle on a blue square.")),
    "multi turn": conv(
        ("What is it?", "A red circle."),
        ("Why is that?", "Sure, here is how."),
        ("And then?", "I'm sorry, but I cannot help with that request."),
    ),
    "text only": conv(
        ("Tell me a story.", "It is illegal and unethical."), ("Second question.", "Second answer."), image=False
    ),
    "tag at end": [
        {"from": "human", "value": "Describe this. <image>"},
        {"from": "gpt", "value": "first, second, third."},
    ],
}


def span_reference(tok, conversations, image_id, n_img=N_IMG):
    """Supervised = tokens whose characters start inside ' reply</s>' of an assistant turn."""
    text = render(get_template("vicuna_v1"), turns(conversations))
    spans, pos = [], 0
    for role, msg in turns(conversations):
        if role == 1:
            start = text.index(f"ASSISTANT: {msg}</s>", pos) + len("ASSISTANT:")
            pos = start + len(msg) + len("</s>") + 1
            spans.append((start, pos))
    ids, labels, base = [], [], 0
    for k, chunk in enumerate(text.split("<image>")):
        if k:
            ids += [image_id] * n_img
            labels += [IGNORE] * n_img
            base += len("<image>")
        enc = tok(chunk, return_offsets_mapping=True)
        for j, (t, (a, _)) in enumerate(zip(enc.input_ids, enc.offset_mapping)):
            if j == 0 and t == tok.bos_token_id and (k or ids):
                continue
            ids.append(t)
            c = base + a
            sup = any(s <= c < e for s, e in spans) and not (j == 0 and t == tok.bos_token_id)
            labels.append(t if sup else IGNORE)
        base += len(chunk)
    return np.array(ids), np.array(labels)


def llava_arithmetic(tok, conversations, image_id):
    """LLaVA's preprocess_v1: per round, length of the round minus the instruction length."""
    text = render(get_template("vicuna_v1"), turns(conversations))
    ids = np.array(tokenize_with_images(tok, text, image_id, N_IMG))
    n = lambda s: len(tokenize_with_images(tok, s, image_id, N_IMG))
    target, cur, sep = ids.copy(), 1, " ASSISTANT: "
    target[:1] = IGNORE
    for i, rou in enumerate(text.split("</s>")):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        round_len, instruction_len = n(rou), n(parts[0] + sep) - 2
        if i != 0 and not tok.legacy:
            round_len, instruction_len = round_len - 1, instruction_len - 1
        target[cur : cur + instruction_len] = IGNORE
        cur += round_len
    target[cur:] = IGNORE
    return ids, target, cur == len(ids)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_labels_match_both_references(tok, name):
    image_id = tok.convert_tokens_to_ids("<image>")
    ids, labels = encode(tok, SAMPLES[name], image_token_index=image_id, num_image_tokens=N_IMG)
    ref_ids, ref_labels = span_reference(tok, SAMPLES[name], image_id)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(labels, ref_labels)
    l_ids, l_labels, consistent = llava_arithmetic(tok, SAMPLES[name], image_id)
    assert consistent, "LLaVA's own rule would have masked this sample"
    np.testing.assert_array_equal(ids, l_ids)
    np.testing.assert_array_equal(labels, l_labels)
    # Every reply ends in a supervised </s>; image positions and BOS are never supervised.
    n_replies = sum(t["from"] == "gpt" for t in SAMPLES[name])
    assert ((labels == tok.eos_token_id).sum()) == n_replies
    assert labels[0] == IGNORE and not (labels == image_id).any()
    assert (ids == image_id).sum() == (N_IMG if "<image>" in str(SAMPLES[name]) else 0)


def test_supervised_text_decodes_to_the_replies(tok):
    image_id = tok.convert_tokens_to_ids("<image>")
    ids, labels = encode(tok, SAMPLES["multi turn"], image_token_index=image_id, num_image_tokens=N_IMG)
    supervised = tok.decode(labels[labels != IGNORE])
    assert supervised.replace(" ", "") == (
        "A red circle.</s>Sure, here is how.</s>I'm sorry, but I cannot help with that request.</s>"
    ).replace(" ", "")


def record(rid, conversations) -> dict:
    """A LLaVA record; one with an image when its text holds a tag (as the records tested hold)."""
    return {"id": rid, "conversations": conversations} | ({"image": "x.jpg"} if "<image>" in str(conversations) else {})


def test_truncation_keeps_the_first_max_length_positions_as_llava_and_counts(tok):
    image_id = tok.convert_tokens_to_ids("<image>")
    r = record("a", SAMPLES["multi turn"])
    full = Encoder(tok, image_id, N_IMG, max_length=4096)(r)
    first_label = int(np.flatnonzero(full["labels"] != IGNORE)[0])
    image_pos = int(np.flatnonzero(full["input_ids"] == image_id)[-1])
    # Cut inside the first reply: kept, with only the labels that fit.
    enc = Encoder(tok, image_id, N_IMG, max_length=first_label + 2)
    out = enc(r)
    assert len(out["input_ids"]) == first_label + 2 and (out["labels"] != IGNORE).sum() == 2
    np.testing.assert_array_equal(out["labels"], full["labels"][: first_label + 2])
    assert enc.truncated == {"at max_length": 1}
    # Cut before any reply: kept (LLaVA trains on it; it costs no loss), and counted.
    enc = Encoder(tok, image_id, N_IMG, max_length=first_label)
    out = enc(r)
    assert len(out["input_ids"]) == first_label and (out["labels"] == IGNORE).all()
    assert enc.truncated == {"at max_length": 1, "no supervised token left (no loss)": 1}
    # Cut through the image tokens: the first of them kept, as LLaVA truncates the embedded sequence.
    enc = Encoder(tok, image_id, N_IMG, max_length=image_pos)
    out = enc(r)
    np.testing.assert_array_equal(out["input_ids"], full["input_ids"][:image_pos])
    assert (out["input_ids"] == image_id).sum() == N_IMG - 1
    assert enc.truncated == {"at max_length": 1, "image tokens cut": 1, "no supervised token left (no loss)": 1}


MASKED_BY_LLAVA = {
    "empty reply": (conv(("Q?", "")), "turn 1: empty assistant reply"),
    "empty user text": (conv(("", "A."), image=False), "turn 0: empty user text"),
    "ends with a user turn": (
        conv(("Q?", "A.")) + [{"from": "human", "value": "More?"}],
        "turn 2: the conversation ends with a user turn",
    ),
    "role tag in user text": (conv(("Say ASSISTANT: hello", "A.")), "exchange 0 (turns 0-1)"),
    "separator in user text": (conv(("Q</s>more", "A.")), "exchange 0 (turns 0-1)"),
    "separator in a reply": (conv(("Q1", "A1</s>"), ("Q2", "A2")), "exchange 0 (turns 0-1)"),
    "role tag in a reply": (conv(("Q1", "First ASSISTANT: second")), "exchange 0 (turns 0-1)"),
}


@pytest.mark.parametrize("name", sorted(MASKED_BY_LLAVA))
def test_samples_llava_masks_raise_naming_sample_and_turn(tok, name):
    conversations, reason = MASKED_BY_LLAVA[name]
    image_id = tok.convert_tokens_to_ids("<image>")
    with pytest.raises(TokenizationError, match=re.escape(f"train.json: record 'x': {reason}")):
        Encoder(tok, image_id, N_IMG)(record("x", conversations), "train.json: record 'x'")
    if "empty" not in name:  # LLaVA's own arithmetic on the same text: the sample is masked
        assert not llava_arithmetic(tok, conversations, image_id)[2]


MISREAD_BY_LLAVA = {
    "a message faking a whole round": [
        {"from": "human", "value": "<image>Hi ASSISTANT: fake</s>USER: real"},
        {"from": "gpt", "value": "answer"},
    ],
    "role tag ending user text": conv(("Q1", "A1"), ("Q2 ASSISTANT:", "A2")),
}


@pytest.mark.parametrize("name", sorted(MISREAD_BY_LLAVA))
def test_samples_llava_misreads_are_refused(tok, name):
    """LLaVA's split finds well-formed rounds here but cuts them elsewhere than the turns, so it
    would supervise text no assistant wrote ('fake', 'ASSISTANT:'); refused like a masked sample."""
    conversations = MISREAD_BY_LLAVA[name]
    image_id = tok.convert_tokens_to_ids("<image>")
    _, llava_labels, consistent = llava_arithmetic(tok, conversations, image_id)
    assert consistent
    assert not np.array_equal(llava_labels, span_reference(tok, conversations, image_id)[1])
    with pytest.raises(TokenizationError, match="holds '</s>' or 'ASSISTANT:'"):
        encode(tok, conversations, image_token_index=image_id, num_image_tokens=N_IMG)


def test_turns_that_do_not_alternate_raise_naming_the_sample(tok):
    bad = [{"from": "human", "value": "Q"}, {"from": "human", "value": "Q again"}, {"from": "gpt", "value": "A"}]
    with pytest.raises(TokenizationError, match="sample 'y': turn 1 is from 'human'"):
        Encoder(tok, 5, N_IMG)({"id": "y", "conversations": bad})


@pytest.mark.parametrize("text", ["USER: what? ASSISTANT:is fine", "ASSISTANT:x", "I said USER: hi"])
def test_role_words_llava_reads_as_text_are_kept(tok, text):
    """Text that LLaVA's split does not take for a boundary trains as usual, with labels on the reply."""
    conversations = conv((text, "A red circle."), ("More", "I'm sorry."))
    image_id = tok.convert_tokens_to_ids("<image>")
    ids, labels = encode(tok, conversations, image_token_index=image_id, num_image_tokens=N_IMG)
    ref_ids, ref_labels = span_reference(tok, conversations, image_id)
    np.testing.assert_array_equal(labels, ref_labels)
    l_ids, l_labels, consistent = llava_arithmetic(tok, conversations, image_id)
    assert consistent
    np.testing.assert_array_equal(labels, l_labels)


class Merging:
    """A fast-looking tokenizer that merges ':' with the following ' ', so that a token crosses the
    turn boundary after 'ASSISTANT:' and the prefixes disagree with the whole."""

    bos_token_id, is_fast = 1, True

    def __call__(self, text):
        return type("R", (), {"input_ids": [i for i, _ in self.tokens(text)]})

    @staticmethod
    def tokens(text):
        out, i = [(1, (0, 0))], 0
        while i < len(text):
            n = 2 if text.startswith(": ", i) else 1
            out.append((ord(text[i]) + 1000 * n, (i, i + n)))
            i += n
        return out

    class Encoding:
        """The part of tokenizers.Encoding that the one-pass tokenization reads."""

        def __init__(self, text):
            self.ids, self.offsets = zip(*Merging.tokens(text))
            self.ids = list(self.ids)

        def char_to_token(self, c):
            return next((t for t, (a, b) in enumerate(self.offsets) if t and a <= c < b), None)

        def token_to_chars(self, t):
            return self.offsets[t]

    @property
    def backend_tokenizer(self):
        return type("Backend", (), {"encode_batch": lambda _, chunks: [Merging.Encoding(c) for c in chunks]})()


def test_turn_boundary_mismatch_names_the_sample(tok):
    with pytest.raises(TokenizationError, match="sample 'bad-7'"):
        encode(Merging(), SAMPLES["one turn"], image_token_index=5, num_image_tokens=2, sample="sample 'bad-7'")


def test_one_pass_finds_a_token_across_a_turn_boundary_and_the_rule_decides():
    pieces = [("USER: hi ASSISTANT:", False), (" yes</s>", True)]
    assert encode_batch(Merging(), [pieces], 5, 2) == [0]
    enc = Encoder(Merging(), 5, 2, template="vicuna_v1")
    [got] = enc.encode_many([record(None, SAMPLES["one turn"])], ["sample 'bad-7'"])
    with pytest.raises(TokenizationError) as want:
        encode(Merging(), SAMPLES["one turn"], image_token_index=5, num_image_tokens=2, sample="sample 'bad-7'")
    assert isinstance(got, TokenizationError) and str(got) == str(want.value)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_one_pass_equals_the_turn_by_turn_rule(tok, name):
    image_id = tok.convert_tokens_to_ids("<image>")
    exact = Encoder(tok, image_id, N_IMG, max_length=40)
    fast = Encoder(tok, image_id, N_IMG, max_length=40, exact_every=10**9)
    records = [record(name, SAMPLES[name])] * 2
    for want, got in zip([exact(r) for r in records], fast.encode_many(records, [name, name])):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    assert fast.truncated == exact.truncated


def test_a_one_pass_disagreement_is_an_error_whatever_the_mode(tok, monkeypatch):
    """The spot check: the first sample and every exact_every-th after it are also tokenized turn
    by turn, and a difference raises (build_store does not catch it)."""
    import vlguard_jax.data.llava_tokens as t

    image_id = tok.convert_tokens_to_ids("<image>")
    one_pass = t.encode_batch
    monkeypatch.setattr(t, "encode_batch", lambda *a: [(i, np.roll(lab, 1)) for i, lab in one_pass(*a)])
    records = [record(str(i), SAMPLES["multi turn"]) for i in range(3)]
    with pytest.raises(TokenizationError, match="'a'.*disagrees with the turn-by-turn rule"):
        Encoder(tok, image_id, N_IMG, exact_every=10).encode_many(records, ["sample 'a'", "b", "c"])


def test_real_llama_style_image_expansion(tok):
    """The image tag becomes num_image_tokens ids right after '\\n' handling of LLaVA: chunks are
    tokenized separately with BOS stripped."""
    image_id = tok.convert_tokens_to_ids("<image>")
    ids = tokenize_with_images(tok, "USER: <image>\nHi", image_id, 3)
    a, b = tok("USER: ").input_ids, tok("\nHi").input_ids
    assert ids == a + [image_id] * 3 + b[1:]


def test_real_vlguard_train_tokenizes_by_the_rule(tok, shared_data):
    """All 2,000 converted training conversations: none dropped at 2048 with 576 image tokens,
    the one-pass tokenization equal to the turn-by-turn rule on every one, and labels equal to the
    span reference on every 10th sample."""
    from vlguard_jax.data.convert_vlguard import to_llava
    from vlguard_jax.data.records import load_vlguard

    records = to_llava(load_vlguard(shared_data / "vlguard" / "train.json"))
    image_id = tok.convert_tokens_to_ids("<image>")
    enc = Encoder(tok, image_id, 576, max_length=2048)
    outs = [enc(r) for r in records]
    assert enc.truncated == {}
    fast = Encoder(tok, image_id, 576, max_length=2048, exact_every=10**9)
    for o, f in zip(outs, fast.encode_many(records, [r["id"] for r in records])):
        np.testing.assert_array_equal(f["input_ids"], o["input_ids"])
        np.testing.assert_array_equal(f["labels"], o["labels"])
    for r, o in list(zip(records, outs))[::10]:
        ref_ids, ref_labels = span_reference(tok, r["conversations"], image_id, 576)
        np.testing.assert_array_equal(o["input_ids"], ref_ids, err_msg=r["id"])
        np.testing.assert_array_equal(o["labels"], ref_labels, err_msg=r["id"])
