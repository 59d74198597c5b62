"""Qwen2.5-VL against transformers' own `Qwen2_5_VLForConditionalGeneration` and its image
processor, on a tiny random model converted by `conversion.qwen2_5_vl`: float32 within 1e-4
relative for every tower block, the merger and the whole model (two image sizes in one batch,
scanned and not); the processor's pixels bit for bit; `get_rope_index`'s positions exactly."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize
from transformers.vision_utils import get_vision_window_index

from tests import tiny_qwen as tq
from vlguard_jax.checkpoints.converted import PARAMS_DIR, load_params
from vlguard_jax.data.qwen_pixels import QwenPixels, smart_resize
from vlguard_jax.families import build_model, load_config
from vlguard_jax.models.qwen2_5_vl import rope_index
from vlguard_jax.models.stacking import to_stacked

TOL = 1e-4
SIZES = [(50, 30), (100, 100), (333, 97), (20, 300), (13, 17), (400, 380)]


def close(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    ns = tq.build(tmp_path_factory.mktemp("qwen"))
    ns.config = load_config(ns.flax_dir / "model_config.json")
    ns.params = load_params(ns.flax_dir / PARAMS_DIR)
    ns.rule = QwenPixels(tq.MIN_PIXELS, tq.MAX_PIXELS)
    return ns


def hf_image_inputs(images):
    out = tq.processor()(images=images, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


@pytest.mark.parametrize(("h", "w"), [(30, 50), (1000, 20), (5, 7), (3000, 2000), (28, 28), (57, 85)])
@pytest.mark.parametrize(("lo", "hi"), [(3136, 12845056), (tq.MIN_PIXELS, tq.MAX_PIXELS)])
def test_smart_resize_is_the_processors(h, w, lo, hi):
    assert smart_resize(h, w, 28, lo, hi) == hf_smart_resize(h, w, 28, lo, hi)


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_pixels_are_the_processors_bit_for_bit(w, h):
    rule = QwenPixels(tq.MIN_PIXELS, tq.MAX_PIXELS)
    img = tq.image(w, h, seed=w)
    ours = rule(img, pad=False)
    pixels, grid = hf_image_inputs([img])
    n = int(grid[0, 1] * grid[0, 2])
    assert tuple(ours["grid"]) == (grid[0, 1], grid[0, 2])
    np.testing.assert_array_equal(ours["patches"][:n], pixels.numpy())
    assert not ours["patches"][n:].any()  # padding
    assert ours["patches"].shape[0] == rule.bucket(n) in rule.buckets()
    assert rule.key_of(ours) == rule.key(w, h, pad=False)  # the header alone gives the shape class


def test_buckets_are_few_and_cover_the_range():
    rule = QwenPixels(3136, 12845056)
    assert rule.buckets()[0] == 16 and rule.buckets()[-1] == 12845056 // 196
    assert len(rule.buckets()) == 13
    assert [rule.bucket(n) for n in (16, 17, 64, 65, 65536)] == [16, 32, 64, 128, 65536]


def hf_positions(model, ids, mask, grids):
    types = torch.tensor((np.asarray(ids) == tq.IMAGE).astype(np.int64))
    grid = torch.tensor([[1, *g] for g in grids]) if grids else None
    pos, delta = model.model.get_rope_index(
        torch.tensor(ids), mm_token_type_ids=types, image_grid_thw=grid, attention_mask=torch.tensor(mask)
    )
    return pos.numpy(), delta.numpy()[:, 0]


def left_padded(rows):
    t = max(len(r) for r in rows)
    ids = np.zeros((len(rows), t), np.int64)
    mask = np.zeros((len(rows), t), np.int64)
    for i, r in enumerate(rows):
        ids[i, t - len(r) :], mask[i, t - len(r) :] = r, 1
    return ids, mask


def test_rope_index_is_get_rope_index(tiny):
    # text only; an image first; text, an image and text after; a tall image (h > w)
    grids = [(4, 6), (6, 24), (22, 2)]
    rows = [
        tq.prompt(0, 7, 0),
        tq.prompt(6, 0, 5, seed=1),
        tq.prompt(36, 4, 9, seed=2),
        tq.prompt(11, 3, 2, seed=3),
    ]
    ids, mask = left_padded(rows)
    ours, following = rope_index(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray([(0, 0), *grids]), tq.IMAGE, 2)
    ref, delta = hf_positions(tiny.model, ids, mask, grids)
    np.testing.assert_array_equal(np.asarray(ours), ref)
    np.testing.assert_array_equal(np.asarray(following), mask.sum(1) + delta)  # rope_deltas


def batch_inputs(rule, images, rows):
    """Our image input for each row (one bucket: the largest) and the HF processor's."""
    ours = [rule(img, pad=False) for img in images]
    n = max(x["patches"].shape[0] for x in ours)
    patches = np.zeros((len(ours), n, rule.patch_dim), np.float32)
    for i, x in enumerate(ours):
        patches[i, : len(x["patches"])] = x["patches"]
    return {"patches": patches, "grid": np.stack([x["grid"] for x in ours])}


def blocks_after(i, vision):
    return {f"blocks_{j}" for j in range(i + 1, 99)}


def test_tower_block_by_block_and_merger(tiny):
    images = [tq.image(100, 60, seed=1), tq.image(50, 130, seed=2)]
    ours_in = batch_inputs(tiny.rule, images, None)
    pixels, grid = hf_image_inputs(images)
    seen = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: seen.append(o.detach().numpy())) for b in tiny.model.model.visual.blocks
    ]
    with torch.no_grad():
        merged = tiny.model.model.visual(pixels, grid_thw=grid).pooler_output.numpy()
    for h in hooks:
        h.remove()
    model = build_model(tiny.config)
    window, _ = get_vision_window_index(grid, 2, tiny.cfg.vision_config.window_size, 14)
    # transformers' blocks run in window order; ours in the processor's: compare block i's output
    # (the tower's depth is 3, so hook each block by running the tower cut after it)
    for i, ref in enumerate(seen):
        cut = dataclasses.replace(tiny.config.vision, depth=i + 1)
        sub = dataclasses.replace(tiny.config, vision=cut)
        params = {"visual": {k: v for k, v in tiny.params["visual"].items() if k not in blocks_after(i, cut)}}
        out = build_model(sub).apply(
            {"params": params}, ours_in["patches"], ours_in["grid"], method=lambda m, p, g: m.visual(p, g)
        )
        flat = np.concatenate([np.asarray(out[r, : int(g[1] * g[2])]) for r, g in enumerate(grid)])
        order = (window.numpy()[:, None] * 4 + np.arange(4)).reshape(-1)
        assert close(flat[order], ref) < TOL, f"block {i}"
    assert len(seen) == tiny.config.vision.depth
    feats = model.apply({"params": tiny.params}, ours_in, method=lambda m, x: m.image_features(x))
    flat = np.concatenate([np.asarray(feats[r, : int(g[1] * g[2]) // 4]) for r, g in enumerate(grid)])
    assert close(flat, merged) < TOL


def hf_logits(model, ids, mask, images):
    pixels, grid = hf_image_inputs(images)
    types = torch.tensor((np.asarray(ids) == tq.IMAGE).astype(np.int64))
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            pixel_values=pixels,
            image_grid_thw=grid,
            mm_token_type_ids=types,
        )
    return out.logits.numpy()


@pytest.mark.parametrize("scan", [False, True])
def test_whole_model_logits_for_two_image_shapes(tiny, scan):
    images = [tq.image(100, 60, seed=1), tq.image(50, 130, seed=2)]
    ours_in = batch_inputs(tiny.rule, images, None)
    tokens = [int(g[0] * g[1]) // 4 for g in ours_in["grid"]]
    ids, mask = left_padded([tq.prompt(tokens[0], 5, 8, seed=4), tq.prompt(tokens[1], 2, 3, seed=5)])
    ref = hf_logits(tiny.model, ids, mask, images)
    model = build_model(tiny.config, scan_layers=scan)
    params = to_stacked(tiny.params) if scan else tiny.params
    positions, _ = model.prompt_positions(jnp.asarray(ids), jnp.asarray(mask), ours_in)
    logits, _ = model.apply({"params": params}, ids, ours_in, attention_mask=mask, positions=positions)
    valid = mask.astype(bool)
    err = np.abs(np.asarray(logits) - ref)[valid].max() / np.abs(ref[valid]).max()
    assert err < TOL
