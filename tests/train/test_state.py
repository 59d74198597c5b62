"""The optimizer's rules: the two learning-rate schedules at steps worked out by hand, and weight
decay on weight matrices only when asked (LAVIS's rule), whatever the layers' form."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vlguard_jax.families import LLAVA, MINIGPTV2
from vlguard_jax.train.config import OptimConfig
from vlguard_jax.train.state import optimizer, param_groups, partition, schedule


def test_the_lavis_schedule_warms_up_then_follows_the_whole_runs_cosine():
    """MiniGPT-v2's stage 3: 1e-6 -> 1e-5 over the warmup, then a cosine over all the steps (t from
    the first step) down to 1e-6."""
    cfg = OptimConfig(schedule="lavis", warmup_steps=10, warmup_start_lr=1e-6, min_lr=1e-6)
    lr = schedule(1e-5, 100, cfg)
    expected = {
        0: 1e-6,
        5: 1e-6 + 9e-6 * 5 / 10,
        10: 1e-6 + 9e-6 * 0.5 * (1 + math.cos(math.pi * 0.1)),  # 9.780e-6: below the peak already
        50: 1e-6 + 9e-6 * 0.5,
        100: 1e-6,
    }
    for step, value in expected.items():
        assert float(lr(step)) == pytest.approx(value, rel=1e-6), step


def test_the_lavis_ramp_counts_the_step_within_the_epoch_as_minigpt4s_scheduler():
    """LinearWarmupCosineLRScheduler.step(cur_epoch, cur_step) with iters_per_epoch 4, max_epoch 5
    and 6 warmup steps: total step t = 4 e + i warms up while t < 6, its ramp at i (so t 4 and 5,
    in epoch 1, ramp from the start again), then the cosine over 20 steps at t."""
    cfg = OptimConfig(
        schedule="lavis", warmup_steps=6, warmup_start_lr=1e-6, min_lr=1e-6, iters_per_epoch=4, max_epoch=5
    )
    lr = schedule(1e-5, 1234, cfg)  # the run's length does not enter: the scheduler's span does
    ramp = lambda i: 1e-6 + 9e-6 * i / 6
    cosine = lambda t: 1e-6 + 9e-6 * 0.5 * (1 + math.cos(math.pi * t / 20))
    expected = {0: ramp(0), 3: ramp(3), 4: ramp(0), 5: ramp(1), 6: cosine(6), 10: cosine(10), 20: 1e-6}
    for step, value in expected.items():
        assert float(lr(step)) == pytest.approx(value, rel=1e-6), step


def test_the_lavis_warmup_sized_to_the_run():
    """warmup_steps 0: ceil(warmup_ratio x the cosine's span), here ceil(0.02 x 1313) = 27; the rate
    then goes on smoothly (the 1,000-step warmup fell from 9.99e-6 to 2.2e-6 at step 1,000)."""
    cfg = OptimConfig(schedule="lavis", warmup_ratio=0.02, warmup_start_lr=1e-6, min_lr=1e-6)
    lr = schedule(1e-5, 1313, cfg)
    assert float(lr(26)) == pytest.approx(1e-6 + 9e-6 * 26 / 27, rel=1e-6)
    assert float(lr(27)) == pytest.approx(1e-6 + 9e-6 * 0.5 * (1 + math.cos(math.pi * 27 / 1313)), rel=1e-6)
    assert abs(float(lr(27)) - float(lr(26))) < 5e-7


def test_the_hf_schedule_is_unchanged():
    lr = schedule(2e-4, 100, OptimConfig(warmup_ratio=0.03))
    assert float(lr(0)) == 0.0 and float(lr(3)) == pytest.approx(2e-4)
    assert float(lr(3 + 97 // 2)) == pytest.approx(2e-4 * 0.5 * (1 + math.cos(math.pi * (97 // 2) / 97)), rel=1e-5)


@pytest.mark.parametrize("only", [False, True])
def test_weight_decay_on_matrices_only_when_asked(only):
    params = {
        "projector": {"linear_1": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}},
        "language_model": {
            "layers": {"self_attn": {"q_proj": {"lora_a": jnp.ones((3, 2, 2)), "bias": jnp.ones((3, 2))}}},
            "norm": {"weight": jnp.ones(2)},
        },
    }
    cfg = OptimConfig(lr=0.1, projector_lr=0.1, weight_decay=0.5, warmup_ratio=0.0, decay_matrices_only=only)
    opt = optimizer(cfg, 10, params, LLAVA)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)
    moved = {
        "/".join(k.key for k in path): bool(np.any(u != 0)) for path, u in jax.tree_util.tree_leaves_with_path(updates)
    }
    matrices = {"projector/linear_1/kernel", "language_model/layers/self_attn/q_proj/lora_a"}
    assert {k for k, v in moved.items() if v} == (matrices if only else set(moved))


def test_grad_clip_zero_is_off():
    params = {"language_model": {"w": {"kernel": jnp.ones((2, 2))}}}
    grads = {"language_model": {"w": {"kernel": jnp.full((2, 2), 100.0)}}}
    for clip, clipped in ((1.0, True), (0.0, False)):
        opt = optimizer(OptimConfig(lr=1.0, warmup_ratio=0.0, grad_clip=clip), 10, params, LLAVA)
        # Adam's moments after one step: 0.1 g and 0.001 g^2, of g clipped to norm 1 or not.
        _, state = opt.update(grads, opt.init(params), params)
        norms = [float(jnp.abs(x).max()) for x in jax.tree.leaves(state) if hasattr(x, "shape") and x.shape == (2, 2)]
        assert (max(norms) <= 1.0) == clipped, (clip, norms)


@pytest.mark.parametrize(
    "family,params,lora,full,projector",
    [
        (
            LLAVA,
            {"vision_tower": {"w": 1}, "projector": {"w": 2}, "language_model": {"q": {"kernel": 3, "lora_a": 4}}},
            {("projector", "w"), ("language_model", "q", "lora_a")},
            {("projector", "w"), ("language_model", "q", "kernel"), ("language_model", "q", "lora_a")},
            {("projector", "w")},
        ),
        (
            MINIGPTV2,
            {
                "vision_tower": {"w": 1},
                "ln_vision": {"weight": 2},
                "llama_proj": {"kernel": 3},
                "language_model": {"q": {"kernel": 4, "lora_b": 5}},
            },
            {("llama_proj", "kernel"), ("language_model", "q", "lora_b")},
            {("llama_proj", "kernel"), ("language_model", "q", "kernel"), ("language_model", "q", "lora_b")},
            {("llama_proj", "kernel")},
        ),
    ],
)
def test_each_family_says_what_trains_and_what_has_the_projector_rate(family, params, lora, full, projector):
    """The family's frozen parts (the vision side) never train; its projection trains in both modes,
    in the optimizer's projector group."""
    for mode, want in (("lora", lora), ("full", full)):
        trainable, frozen = partition(params, mode, family)
        assert set(traverse_util.flatten_dict(trainable)) == want
        assert set(traverse_util.flatten_dict(frozen)) == set(traverse_util.flatten_dict(params)) - want
    groups = traverse_util.flatten_dict(param_groups(partition(params, "full", family)[0], family))
    assert {k for k, v in groups.items() if v == "projector"} == projector
