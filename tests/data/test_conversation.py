"""The LLaVA templates, rendered exactly."""

import pytest

from vlguard_jax.data.conversation import generation_prompt, render, turns
from vlguard_jax.data.llava_tokens import get_template

VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions."
)
LLAVA = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions."
)


def test_two_turn_training_prompt():
    conv = [
        {"from": "human", "value": "<image>Q1"},
        {"from": "gpt", "value": "A1"},
        {"from": "human", "value": "Q2"},
        {"from": "gpt", "value": "A2"},
    ]
    text = render(get_template("vicuna_v1"), turns(conv))
    assert text == VICUNA + " USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>"


def test_image_tag_moves_to_the_front_of_its_turn():
    conv = [{"from": "human", "value": "Describe this. <image>"}, {"from": "gpt", "value": "A"}]
    assert turns(conv)[0] == (0, "<image>\nDescribe this.")


def test_generation_prompt_llava_v1():
    assert (
        generation_prompt(get_template("llava_v1"), "What is this?", image=True)
        == LLAVA + " USER: <image>\nWhat is this? ASSISTANT:"
    )
    assert generation_prompt(get_template("llava_v1"), "Hi", image=False) == LLAVA + " USER: Hi ASSISTANT:"


def test_leading_gpt_turn_is_dropped_and_order_enforced():
    conv = [{"from": "gpt", "value": "x"}, {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]
    assert turns(conv) == [(0, "Q"), (1, "A")]
    with pytest.raises(ValueError, match="turn 1 is from 'human'"):
        turns([{"from": "human", "value": "Q"}, {"from": "human", "value": "Q"}])
    with pytest.raises(ValueError, match="unknown template 'alpaca'"):
        get_template("alpaca")


def test_image_tags_follow_llavas_preprocess_multimodal():
    from vlguard_jax.data.conversation import image_tags

    def rec(*texts, img=True):
        conv = [{"from": "human" if k % 2 == 0 else "gpt", "value": t} for k, t in enumerate(texts)]
        return {"id": "r", **({"image": "a.jpg"} if img else {}), "conversations": conv}

    one = rec("<image>\nQ", "A")
    assert image_tags(one) is one  # matching: as it is
    assert image_tags(rec("Q", "A", img=False)) == rec("Q", "A", img=False)
    untagged = image_tags(rec("Q", "A"))
    assert "image" not in untagged and untagged["image_tags"] == "image_tag_missing"
    literal = image_tags(rec("what is <image>?", "a tag", img=False))
    assert literal["conversations"][0]["value"] == "what is <image>?" and literal["image_tags"] == "literal_image_tag"
    collapsed = image_tags(rec(" look <image> here <image> ", "Yes."))
    assert collapsed["conversations"][0]["value"] == "<image>\nlook  here" and collapsed["image"] == "a.jpg"
    two = image_tags(rec("<image> Q1", "A1", "Q2 <image>", "A2"))
    assert [t["value"] for t in two["conversations"]] == ["<image>\nQ1", "A1", "Q2", "A2"]
    assert two["image_tags"] == "image_tags_collapsed"
    # text-only turns keep a literal tag where it is; image turns move it first
    assert turns(rec("say <image> now", "ok", img=False)["conversations"], image=False)[0] == (0, "say <image> now")
    assert turns(rec("say <image> now", "ok")["conversations"])[0] == (0, "<image>\nsay  now")
