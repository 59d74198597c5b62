"""The built-in sample data the demo trains and evaluates on."""

import json
import re
from collections import Counter

from vlguard_jax.data.sample import COMPLY, UNANSWERABLE, UNANSWERABLE_CORES, UNSAFE_CORES, write_sample
from vlguard_jax.evaluate.safety.scoring import is_refusal


def _load(paths):
    return {k: json.loads(paths[k].read_text()) for k in ("train", "test", "helpful")}


def _instructions(records):
    return {v for r in records for p in r["instr-resp"] for k, v in p.items() if k != "response"}


def test_test_split_shares_no_image_and_no_instruction_with_training(tmp_path):
    d = _load(write_sample(tmp_path))
    assert len(d["train"]) == 64 and len(d["test"]) == 64 and len(d["helpful"]) == 192
    train_images = {r["image"] for r in d["train"]} | {r["image"] for r in d["helpful"] if "image" in r}
    assert not train_images & {r["image"] for r in d["test"]}
    helpful_questions = {
        t["value"].removeprefix("<image>\n") for r in d["helpful"] for t in r["conversations"] if t["from"] == "human"
    }
    test = _instructions(d["test"])
    assert len(test) > 40
    assert not test & (_instructions(d["train"]) | helpful_questions)


def test_helpfulness_data_complies_with_some_harmful_requests(tmp_path):
    d = _load(write_sample(tmp_path))
    comply_head = COMPLY.split("{")[0]
    harmful = [r for r in d["helpful"] if r["conversations"][1]["value"].startswith(comply_head)]
    assert 0.08 <= len(harmful) / len(d["helpful"]) <= 0.25  # "about 15%"
    assert any("image" in r for r in harmful) and any("image" not in r for r in harmful)


def test_same_seed_same_data(tmp_path):
    a, b = _load(write_sample(tmp_path / "a")), _load(write_sample(tmp_path / "b"))
    assert a == b
    assert (tmp_path / "a" / "images" / a["test"][0]["image"]).read_bytes() == (
        tmp_path / "b" / "images" / b["test"][0]["image"]
    ).read_bytes()


def test_each_request_recurs_equally_in_a_split(tmp_path):
    """Every unsafe request (the core of an instruction) is asked of the same number of safe
    images, so no seed trains on too few of one."""
    d = _load(write_sample(tmp_path, seed=7, n_train=128, n_test=128))
    for split in ("train", "test"):
        unsafe = [p["unsafe_instruction"] for r in d[split] for p in r["instr-resp"] if "unsafe_instruction" in p]
        counts = Counter(next(c.split("{")[0] + c.split("}")[-1] for c in UNSAFE_CORES if _has(q, c)) for q in unsafe)
        assert sorted(counts.values()) == [16, 16, 16, 16], (split, counts)


def test_helpfulness_data_declines_questions_the_image_cannot_answer(tmp_path):
    """About 10% of the helpfulness rows decline, in the refusal words VLGuard tunes towards."""
    d = _load(write_sample(tmp_path))
    declined = [r for r in d["helpful"] if r["conversations"][1]["value"].startswith(UNANSWERABLE.split(".")[0])]
    assert all(any(_has(r["conversations"][0]["value"], c) for c in UNANSWERABLE_CORES) for r in declined)
    assert 0.04 <= len(declined) / len(d["helpful"]) <= 0.2
    assert all(is_refusal(r["conversations"][1]["value"]) for r in declined)
    assert not any(is_refusal(r["conversations"][1]["value"]) for r in d["helpful"] if r not in declined)


def _has(question: str, core: str) -> bool:
    """Whether `question` asks `core` (its fixed words, whatever fills its slots)."""
    return all(part in question for part in re.split(r"\{\w+\}", core) if part)
