"""VLGuard -> LLaVA conversations, on the real metadata and against the authors' rule."""

import collections
import copy
import json
import random

import pytest

from vlguard_jax.data.convert_vlguard import main, to_llava
from vlguard_jax.data.records import load_vlguard


def authors_rule(records):
    """The published rule, written out independently: in-place, one seeded stream in file order."""
    data = copy.deepcopy(records)
    rng = random.Random()
    rng.seed(0)
    for item in data:
        pairs = item["instr-resp"]
        item["conversations"] = []
        if len(pairs) > 1:
            rng.shuffle(pairs)
            for j in range(2):
                key = list(pairs[j].keys())[0]
                item["conversations"] += [
                    {"from": "human", "value": ("<image>" if j == 0 else "") + pairs[j][key]},
                    {"from": "gpt", "value": pairs[j]["response"]},
                ]
        else:
            item["conversations"] += [
                {"from": "human", "value": "<image>" + pairs[0]["instruction"]},
                {"from": "gpt", "value": pairs[0]["response"]},
            ]
        item.pop("instr-resp")
    return data


@pytest.fixture(scope="module")
def train(shared_data):
    return load_vlguard(shared_data / "vlguard" / "train.json")


def test_real_train_and_test_parse(shared_data, train):
    test = load_vlguard(shared_data / "vlguard" / "test.json")
    assert len(train) == 2000 and len(test) == 1000
    assert collections.Counter(r["safe"] for r in test) == {True: 558, False: 442}


def test_conversion_equals_the_authors_rule_on_real_train(train, tmp_path, shared_data):
    assert main(["--src", str(shared_data / "vlguard" / "train.json"), "--dst", str(tmp_path / "out.json")]) == 0
    ours = json.loads((tmp_path / "out.json").read_text())
    assert ours == authors_rule(train)
    assert [list(r) for r in ours[:3]] == [[k for k in r if k != "instr-resp"] + ["conversations"] for r in train[:3]]


def test_turn_and_category_counts(train):
    conv = to_llava(train)
    assert collections.Counter(len(r["conversations"]) for r in conv) == {4: 977, 2: 1023}
    assert collections.Counter(r.get("harmful_category") for r in conv) == collections.Counter(
        r.get("harmful_category") for r in train
    )
    for r in conv:
        human = [t["value"] for t in r["conversations"][::2]]
        assert human[0].startswith("<image>") and not human[0].startswith("<image>\n")
        assert all("<image>" not in h for h in human[1:])
    # the shuffle really happens: both orders of (safe, unsafe) occur
    firsts = collections.Counter(
        next(p for p in src["instr-resp"] if "<image>" + p[next(iter(p))] == r["conversations"][0]["value"])
        .keys()
        .__iter__()
        .__next__()
        for src, r in zip(train, conv)
        if src["safe"]
    )
    assert set(firsts) == {"safe_instruction", "unsafe_instruction"}


def test_does_not_mutate_its_input(train):
    before = copy.deepcopy(train[:50])
    to_llava(train[:50])
    assert train[:50] == before
