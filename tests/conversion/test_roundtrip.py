"""HF -> Flax -> HF is bit-exact; every real key layout converts; the original LLaVA layout."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import save_file

from tests import tiny
from vlguard_jax import load_model
from vlguard_jax.conversion import llava
from vlguard_jax.conversion.flax_to_hf import export
from vlguard_jax.conversion.hf_to_flax import convert
from vlguard_jax.conversion.hf_to_flax import main as hf_to_flax_main


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny.build(tmp_path_factory.mktemp("rt"), heads=3, kv_heads=1)


def _ours(flax_dir, ids, cfg, pixels):
    m = load_model(flax_dir, dtype=jnp.float32)
    return np.asarray(
        m.model.apply({"params": m.params}, jnp.asarray(ids), jnp.asarray(tiny.row_pixels(ids, cfg, pixels)))[0]
    )


def test_roundtrip_is_bit_exact_and_loads_in_transformers(built, tmp_path):
    export(built.flax_dir, tmp_path / "out", max_shard_bytes=50_000)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # really sharded
    model, info = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    a, b = built.model.state_dict(), model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    proc = transformers.AutoProcessor.from_pretrained(tmp_path / "out")
    assert proc.tokenizer.convert_tokens_to_ids("<image>") == built.cfg.image_token_index
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaForConditionalGeneration"]
    assert (tmp_path / "out" / "generation_config.json").exists()


def test_sharded_hub_named_input_converts_identically(built, tmp_path):
    """Our export uses the hub names (vision_tower.vision_model.*) in an index: convert it back."""
    export(built.flax_dir, tmp_path / "hub", max_shard_bytes=50_000)
    convert(tmp_path / "hub", tmp_path / "again", "float32")
    ids, mask, pixels = tiny.batch(built.cfg, built.tok)
    np.testing.assert_array_equal(
        _ours(tmp_path / "again", ids, built.cfg, pixels), _ours(built.flax_dir, ids, built.cfg, pixels)
    )


def test_transformers5_in_memory_names(built, tmp_path):
    """model.language_model.*, model.vision_tower.* (no vision_model level), lm_head.*"""
    d = tmp_path / "tf5"
    d.mkdir()
    sd = {k: v.contiguous() for k, v in built.model.state_dict().items()}
    assert any(k.startswith("model.vision_tower.embeddings") for k in sd)
    save_file(sd, d / "model.safetensors")
    (d / "config.json").write_text(built.cfg.to_json_string())
    built.tok.save_pretrained(d)
    convert(d, tmp_path / "fx", "float32")
    ids, mask, pixels = tiny.batch(built.cfg, built.tok)
    np.testing.assert_array_equal(
        _ours(tmp_path / "fx", ids, built.cfg, pixels), _ours(built.flax_dir, ids, built.cfg, pixels)
    )


def _original_layout(built, d, with_tower=True, vocab_has_image_row=True):
    """An original-LLaVA checkpoint made from the tiny HF model through llava.ORIGINAL."""
    d.mkdir()
    m = load_model(built.flax_dir, dtype=jnp.float32)
    from vlguard_jax.conversion.flax_to_llava import torch_state

    hub = torch_state(m.config, m.params, np.float32)
    # hub names -> original names: the same rules with the other prefixes
    from flax import traverse_util

    state = {}
    for path in traverse_util.flatten_dict(m.params, sep="/"):
        src, _ = llava.torch_name(path, llava.HUB)
        dst, _ = llava.torch_name(path, llava.ORIGINAL)
        if with_tower or not path.startswith("vision_tower/"):
            state[dst] = torch.from_numpy(np.ascontiguousarray(hub[src]))
    text = built.cfg.text_config.to_dict()
    if not vocab_has_image_row:
        for k in ("model.embed_tokens.weight", "lm_head.weight"):
            state[k] = state[k][:-1].clone()
        text["vocab_size"] -= 1
    save_file(state, d / "model.safetensors")
    v = built.cfg.vision_config
    cfg = dict(
        text,
        architectures=["LlavaLlamaForCausalLM"],
        model_type="llava_llama",
        mm_vision_tower="tiny/clip",
        mm_hidden_size=v.hidden_size,
        mm_vision_select_layer=built.cfg.vision_feature_layer,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_feature="patch",
        image_aspect_ratio="pad",
    )
    (d / "config.json").write_text(json.dumps(cfg))
    tiny.tokenizer(image_token=False).save_pretrained(d)  # the original tokenizer has no <image>
    return hub


def test_original_layout_with_tower_inside(built, tmp_path):
    _original_layout(built, tmp_path / "orig")
    tower = tmp_path / "clip"
    built.cfg.vision_config.save_pretrained(tower)  # the tower's config (weights are inside)
    convert(tmp_path / "orig", tmp_path / "fx", "float32", vision_tower=tower)
    ids, mask, pixels = tiny.batch(built.cfg, built.tok)
    ref = tiny.torch_logits(built.model, ids, mask, pixels)
    assert tiny.rel_err(_ours(tmp_path / "fx", ids, built.cfg, pixels), ref, mask) <= 1e-4
    m = load_model(tmp_path / "fx", dtype=jnp.float32)
    assert m.config.image_token_index == built.cfg.image_token_index  # <image> added, next free id
    assert m.tokenizer.convert_tokens_to_ids("<image>") == built.cfg.image_token_index
    assert (tmp_path / "fx" / "preprocessor_config.json").exists()


def original_without_tower(built, tmp: Path) -> tuple[Path, Path]:
    """An original-LLaVA checkpoint without its CLIP tower (tmp/orig, whose config names the
    tower `tiny/clip`), and that tower as a CLIPVisionModel folder (tmp/clip)."""
    hub = _original_layout(built, tmp / "orig", with_tower=False)
    tower = tmp / "clip"
    tower.mkdir()
    pre = llava.HUB["vision"]
    save_file(
        {
            "vision_model." + k[len(pre) :]: torch.from_numpy(np.ascontiguousarray(a))
            for k, a in hub.items()
            if k.startswith(pre)
        },
        tower / "model.safetensors",
    )
    built.cfg.vision_config.save_pretrained(tower)
    return tmp / "orig", tower


def test_original_layout_with_separate_tower(built, tmp_path):
    _, tower = original_without_tower(built, tmp_path)
    assert (
        hf_to_flax_main(
            [
                "--src",
                str(tmp_path / "orig"),
                "--dst",
                str(tmp_path / "fx"),
                "--dtype",
                "float32",
                "--vision-tower",
                str(tower),
            ]
        )
        == 0
    )
    ids, mask, pixels = tiny.batch(built.cfg, built.tok)
    np.testing.assert_array_equal(
        _ours(tmp_path / "fx", ids, built.cfg, pixels), _ours(built.flax_dir, ids, built.cfg, pixels)
    )


def test_original_layout_image_token_outside_vocab(built, tmp_path):
    """With no embedding row for <image>, our model still runs; export pads the vocabulary."""
    _original_layout(built, tmp_path / "orig", vocab_has_image_row=False)
    tower = tmp_path / "clip"
    built.cfg.vision_config.save_pretrained(tower)
    convert(tmp_path / "orig", tmp_path / "fx", "float32", vision_tower=tower)
    m = load_model(tmp_path / "fx", dtype=jnp.float32)
    assert m.config.image_token_index == m.config.text.vocab_size
    ids, mask, pixels = tiny.batch(built.cfg, built.tok)
    ours = _ours(tmp_path / "fx", ids, built.cfg, pixels)
    export(tmp_path / "fx", tmp_path / "hf")
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf")
    assert hf.config.text_config.vocab_size % 64 == 0
    ref = tiny.torch_logits(hf, ids, mask, pixels)[..., : ours.shape[-1]]
    assert tiny.rel_err(ours, ref, mask) <= 1e-4
