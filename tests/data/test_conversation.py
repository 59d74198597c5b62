"""The LLaVA templates, rendered exactly."""

import pytest

from vlguard_jax.data.conversation import generation_prompt, get_template, render, turns

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
