"""MiniGPT-v2 against a PyTorch reference written from the authors' architecture
(tests/minigptv2_reference.py), on tiny random weights moved by the conversion key table: float32
within 1e-4 relative for the tower, the projection and the whole model with LoRA on q/v. The
position-grid resize matches `torch.nn.functional.interpolate` itself."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers
from flax import traverse_util

from tests import minigptv2_reference as ref
from vlguard_jax.conversion import layouts, minigptv2
from vlguard_jax.models import abstract_params
from vlguard_jax.models.config import LoraSpec, text_from_hf
from vlguard_jax.models.eva import EvaConfig, EvaVisionTower, bicubic_matrix, resize_positions
from vlguard_jax.models.minigptv2 import MiniGPTv2Config, MiniGPTv2Model
from vlguard_jax.models.stacking import to_stacked

TOL = 1e-4  # max |difference| <= TOL * max |reference|, float32
EVA = EvaConfig(hidden_size=176, intermediate_size=352, num_hidden_layers=2, num_attention_heads=2, image_size=56)
LORA = LoraSpec(rank=4, alpha=16.0, targets=("q_proj", "v_proj"))


def close(ours, theirs) -> bool:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return np.abs(ours - theirs).max() <= TOL * np.abs(theirs).max()


@pytest.mark.parametrize(("grid", "new"), [(16, 32), (4, 7), (5, 3)])
def test_position_resize_is_torchs_bicubic(grid, new):
    pos = np.random.default_rng(grid).normal(size=(1 + grid * grid, 8)).astype(np.float32)
    tokens = torch.tensor(pos[1:]).reshape(1, grid, grid, 8).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(tokens, size=(new, new), mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(new * new, 8).numpy()
    out = resize_positions(pos, new)
    np.testing.assert_array_equal(out[0], pos[0])  # CLS is kept
    np.testing.assert_allclose(out[1:], expected, rtol=1e-5, atol=1e-6)
    # jax.image.resize's cubic kernel is another one: the reason this resize exists.
    theirs = jax.image.resize(jnp.asarray(pos[1:].reshape(grid, grid, 8)), (new, new, 8), "cubic")
    assert grid != 16 or np.abs(np.asarray(theirs).reshape(-1, 8) - expected).max() > 1e-3
    assert np.allclose(bicubic_matrix(grid, new).sum(axis=1), 1.0)  # each output is a weighted mean


def params_from(model, sd: dict, prefixes: dict) -> dict:
    """Our parameter tree from a reference state dict, through the conversion key table."""
    flat = {}
    for path in traverse_util.flatten_dict(abstract_params(model)):
        name, transform = minigptv2.RULES.torch_name("/".join(path), prefixes)
        flat[path] = jnp.asarray(layouts.to_flax(sd[name], transform))
    return traverse_util.unflatten_dict(flat)


def tiny_llama(seed: int = 0):
    cfg = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval(), cfg


def test_the_tower_layer_by_layer():
    c = EVA
    eva = ref.EvaViT(c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, 56, 14)
    ref.randomize_(eva)
    sd = {k: v.detach().numpy() for k, v in eva.state_dict().items()}  # eva_vit_g.pth's names
    pixels = np.random.default_rng(0).normal(size=(2, 3, 56, 56)).astype(np.float32)
    for depth in (1, 2):
        tower = EvaVisionTower(dataclasses.replace(c, num_hidden_layers=depth))
        shapes = jax.eval_shape(lambda t=tower: t.init(jax.random.key(0), jnp.zeros((1, 3, 56, 56))))["params"]
        flat = {}
        for path in traverse_util.flatten_dict(nn.unbox(shapes)):
            name, transform = minigptv2.RULES.torch_name(
                "vision_tower/" + "/".join(path), dict(minigptv2.PREFIXES, eva="")
            )
            flat[path] = layouts.to_flax(sd[name], transform)
        with torch.no_grad():
            x = eva.patch_embed(torch.tensor(pixels))
            x = torch.cat((eva.cls_token.expand(2, -1, -1), x), dim=1) + eva.pos_embed
            for blk in eva.blocks[:depth]:
                x = blk(x)
        got = tower.apply({"params": traverse_util.unflatten_dict(flat)}, jnp.asarray(pixels))
        assert close(got, x.numpy()), depth


@pytest.fixture(scope="module")
def pair():
    llama, hf_cfg = tiny_llama()
    eva = ref.EvaViT(EVA.hidden_size, 2, 2, EVA.intermediate_size, 56, 14)
    lora = peft.LoraConfig(r=LORA.rank, lora_alpha=LORA.alpha, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    theirs = ref.MiniGPTv2(eva, llama, lora).eval()
    ref.randomize_(theirs)
    config = MiniGPTv2Config(vision=EVA, text=text_from_hf(hf_cfg.to_dict()), image_token_index=128)
    ours = MiniGPTv2Model(config, lora=LORA)
    return ours, params_from(ours, ref.state_dict(theirs), minigptv2.PREFIXES), theirs


def test_the_projection_joins_four_consecutive_patches(pair):
    ours, params, theirs = pair
    pixels = np.random.default_rng(1).normal(size=(2, 3, 56, 56)).astype(np.float32)
    got = ours.apply({"params": params}, jnp.asarray(pixels), method=ours.image_features)
    with torch.no_grad():
        expected = theirs.encode_img(torch.tensor(pixels)).numpy()
    assert got.shape == (2, 4, 64) and close(got, expected)


def test_whole_model_logits_with_lora(pair):
    ours, params, theirs = pair
    rng = np.random.default_rng(2)
    pixels = rng.normal(size=(2, 3, 56, 56)).astype(np.float32)
    before, after = rng.integers(3, 128, size=(2, 5)), rng.integers(3, 128, size=(2, 7))
    ids = np.concatenate([before, np.full((2, 4), 128), after], axis=1)
    got, _ = ours.apply({"params": params}, jnp.asarray(ids), jnp.asarray(pixels))
    with torch.no_grad():
        expected = theirs.logits(torch.tensor(before), torch.tensor(pixels), torch.tensor(after)).numpy()
    assert close(got, expected)
    # Scanned decoder layers over the stacked weights give the same logits.
    scanned, _ = ours.clone(scan_layers=True).apply(
        {"params": to_stacked(params)}, jnp.asarray(ids), jnp.asarray(pixels)
    )
    assert close(scanned, expected)
    # LoRA is in both: without the factors our logits move well past the tolerance.
    flat = traverse_util.flatten_dict(params)
    no_lora = traverse_util.unflatten_dict({k: (v * 0 if k[-1] == "lora_b" else v) for k, v in flat.items()})
    assert not close(ours.apply({"params": no_lora}, jnp.asarray(ids), jnp.asarray(pixels))[0], expected)


def test_the_config_reads_back_as_itself_and_its_json_is_stable():
    """A resume compares the saved config's JSON with the live one: tuples must not turn into lists."""
    import json

    c = MiniGPTv2Config(vision=EVA, text=text_from_hf(tiny_llama()[1].to_dict()), lora=LORA)
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert MiniGPTv2Config.from_dict(json.loads(json.dumps(d))) == c
