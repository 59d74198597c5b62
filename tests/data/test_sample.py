"""The built-in sample data the demo trains and evaluates on."""

import json

from vlguard_jax.data.sample import COMPLY, write_sample


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
