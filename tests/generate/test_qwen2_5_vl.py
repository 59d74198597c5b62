"""Greedy generation on Qwen2.5-VL equals transformers' `generate`, token for token: a batch of
prompts with images of four sizes (three buckets, two grids sharing one), left-padded,
with a text-only prompt among them; the decode goes on from each row's multimodal positions."""

import pytest
import torch

from tests import tiny_qwen as tq
from vlguard_jax.checkpoints.converted import PARAMS_DIR, load_params
from vlguard_jax.families import build_model, family_of, load_config
from vlguard_jax.generate.sampler import Generator, Sampling
from vlguard_jax.models.stacking import to_stacked

NEW = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    ns = tq.build(tmp_path_factory.mktemp("qwen"))
    ns.config = load_config(ns.flax_dir / "model_config.json")
    ns.params = load_params(ns.flax_dir / PARAMS_DIR)
    return ns


def hf_greedy(model, ids, img):
    kw = {}
    if img is not None:
        out = tq.processor()(images=[img], return_tensors="pt")
        kw = dict(pixel_values=out["pixel_values"], image_grid_thw=out["image_grid_thw"])
    ids_t = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids_t,
            attention_mask=torch.ones_like(ids_t),
            mm_token_type_ids=(ids_t == tq.IMAGE).long(),
            max_new_tokens=NEW,
            do_sample=False,
            eos_token_id=2,
            pad_token_id=0,
            **kw,
        )
    toks = out[0, len(ids) :].tolist()
    return toks[: toks.index(2) + 1] if 2 in toks else toks


@pytest.mark.parametrize("scan", [False, True])
def test_greedy_generation_is_transformers(tiny, scan):
    image = family_of(tiny.config).image_input(tiny.config)
    images = [
        tq.image(100, 60, seed=1),
        tq.image(50, 130, seed=2),
        tq.image(90, 70, seed=3),
        None,
        tq.image(300, 200, 4),
    ]
    pixels = [None if img is None else image.pixels(img, pad=False) for img in images]
    prompts = [
        tq.prompt(image.count(x) if x is not None else 0, 3 + i, 2 + 2 * i, seed=10 + i) for i, x in enumerate(pixels)
    ]
    model = build_model(tiny.config, scan_layers=scan)
    params = to_stacked(tiny.params) if scan else tiny.params
    gen = Generator(model, params, eos_ids=2, pad_id=0, batch_size=4, bucket=8)
    ours = gen(prompts, pixels, Sampling(max_new_tokens=NEW))
    theirs = [hf_greedy(tiny.model, p, img) for p, img in zip(prompts, images)]
    assert ours == theirs
    assert len({image.rule.key_of(x) for x in pixels if x is not None}) == 4  # four image sizes
    assert len({x["patches"].shape for x in pixels if x is not None}) == 3  # in three buckets
