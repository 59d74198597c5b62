"""The batched generator: greedy token parity with transformers' generate, batch independence,
per-row EOS, sampling reproducibility, and the CLI's JSON output."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests import tiny
from vlguard_jax.generate import Generator, Sampling, load_generator
from vlguard_jax.generate.__main__ import main as cli


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny.build(tmp_path_factory.mktemp("gen"), scale=5.0)


@pytest.fixture(scope="module")
def gen(built):
    g, m = load_generator(built.flax_dir, dtype=jnp.float32, batch_size=4, bucket=16)
    return g, m


def prompts(built, lengths=(9, 4, 14, 6), images=(True, False, True, True), seed=0):
    rng = np.random.default_rng(seed)
    n = built.cfg.vision_config.image_size
    k = (n // 14) ** 2
    ids, pix = [], []
    for length, img in zip(lengths, images):
        text = rng.integers(3, len(built.tok) - 1, length).tolist()
        ids.append([1] + ([built.cfg.image_token_index] * k if img else []) + text)
        pix.append(rng.normal(size=(3, n, n)).astype(np.float32) if img else None)
    return ids, pix


def hf_generate(built, ids, pix, new, eos=2, min_new=0):
    t = max(map(len, ids))
    x = np.zeros((len(ids), t), np.int64)
    mask = np.zeros_like(x)
    for i, s in enumerate(ids):
        x[i, t - len(s) :], mask[i, t - len(s) :] = s, 1
    pixels = torch.tensor(np.stack([p for p in pix if p is not None]))
    with torch.no_grad():
        out = built.model.generate(
            input_ids=torch.tensor(x),
            attention_mask=torch.tensor(mask),
            pixel_values=pixels,
            do_sample=False,
            max_new_tokens=new,
            eos_token_id=eos,
            pad_token_id=0,
            min_new_tokens=min_new,
        )
    rows = []
    for r in out[:, t:].tolist():
        cut = next((k + 1 for k, tok in enumerate(r) if tok == eos), len(r))
        rows.append(r[:cut])
    return rows


def test_greedy_matches_transformers_generate(built, gen):
    g, _ = gen
    ids, pix = prompts(built)
    ours = g(ids, pix, Sampling(max_new_tokens=12))
    assert ours == hf_generate(built, ids, pix, 12)
    assert all(len(r) >= 1 for r in ours)


def test_scanned_layers_generate_the_same_tokens(built, gen):
    g, _ = gen
    scanned, loaded = load_generator(built.flax_dir, dtype=jnp.float32, batch_size=4, bucket=16, scan_layers=True)
    assert "layers" in loaded.params["language_model"] and loaded.model.scan_layers
    ids, pix = prompts(built, seed=1)
    assert scanned(ids, pix, Sampling(max_new_tokens=12)) == g(ids, pix, Sampling(max_new_tokens=12))


def test_min_new_tokens_bans_eos_as_transformers_does(built, gen):
    """The authors generate with min_new_tokens=1: a reply can never be empty. Rows whose greedy
    first or second token is made the EOS must take the next best token instead, as in generate."""
    g, m = gen
    ids, pix = prompts(built)
    free = g(ids, pix, Sampling(max_new_tokens=6))
    eos = free[0][0]
    g2 = Generator(m.model, m.params, eos_ids=[eos], pad_id=0, batch_size=4, bucket=16)
    assert g2(ids, pix, Sampling(max_new_tokens=6))[0] == [eos]
    for min_new in (1, 3):
        ours = g2(ids, pix, Sampling(max_new_tokens=6, min_new_tokens=min_new))
        assert ours == hf_generate(built, ids, pix, 6, eos=eos, min_new=min_new)
        assert all(eos not in r[:min_new] for r in ours) and ours[0][0] != eos
    with pytest.raises(ValueError, match="--max-new-tokens must be at least 1, got 0"):
        Sampling(max_new_tokens=0)


def test_output_does_not_depend_on_the_batch(built, gen):
    g, _ = gen
    ids, pix = prompts(built, lengths=(3, 30, 7, 11, 5), images=(False, True, True, False, True))
    together = g(ids, pix, Sampling(max_new_tokens=8))
    alone = [g([i], [p], Sampling(max_new_tokens=8))[0] for i, p in zip(ids, pix)]
    assert together == alone
    # Sampling draws per (seed, position in the request, step): splitting a request into
    # batches differently changes nothing.
    g1 = Generator(g.model, g.params, eos_ids=[2], pad_id=0, batch_size=1, bucket=16)
    sampled = Sampling(temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=8)
    assert g(ids, pix, sampled, seed=3) == g1(ids, pix, sampled, seed=3)


def test_sampling_is_reproducible_for_a_seed(built, gen):
    g, _ = gen
    ids, pix = prompts(built)
    s = Sampling(temperature=1.0, top_k=50, top_p=0.95, max_new_tokens=10)
    a, b, c = g(ids, pix, s, seed=1), g(ids, pix, s, seed=1), g(ids, pix, s, seed=2)
    assert a == b and a != c
    assert a != g(ids, pix, Sampling(max_new_tokens=10))


def test_each_row_stops_at_its_own_eos(built, gen):
    g, m = gen
    ids, pix = prompts(built)
    free = g(ids, pix, Sampling(max_new_tokens=10))
    k = next(k for k in range(2, 10) if free[0][k] not in free[0][:k])
    eos = free[0][k]  # make a later token of row 0 the end of sequence
    g2 = Generator(m.model, m.params, eos_ids=[eos], pad_id=0, batch_size=4, bucket=16)
    out = g2(ids, pix, Sampling(max_new_tokens=10))
    for row_free, row in zip(free, out):
        cut = next((k + 1 for k, t in enumerate(row_free) if t == eos), len(row_free))
        assert row == row_free[:cut]
    assert out[0] == free[0][: k + 1]
    assert any(len(r) > k + 1 for r in out), "other rows went on past row 0's end"


def test_cli_json_lines(built, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8)).save(tmp_path / "a.png")
    f = tmp_path / "p.jsonl"
    f.write_text(
        json.dumps({"image": str(tmp_path / "a.png"), "prompt": "What is shown?"})
        + "\n"
        + json.dumps({"prompt": "Tell me a story."})
        + "\n"
    )
    assert cli(["--checkpoint", str(built.flax_dir), "--prompts-file", str(f), "--max-new-tokens", "5", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and all({"prompt_ids", "token_ids", "text"} <= set(x) for x in lines)
    k = (built.cfg.vision_config.image_size // 14) ** 2
    assert lines[0]["prompt_ids"].count(built.cfg.image_token_index) == k
    assert built.cfg.image_token_index not in lines[1]["prompt_ids"]
    assert 1 <= len(lines[0]["token_ids"]) <= 5
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert cli(["--checkpoint", str(built.flax_dir), "--prompts-file", str(tmp_path / "bad.jsonl")]) == 1
    assert "bad.jsonl: line 1" in capsys.readouterr().err


def test_cli_refuses_image_tags_that_do_not_match_the_images(built, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (30, 30)).save(tmp_path / "a.png")
    base = ["--checkpoint", str(built.flax_dir), "--max-new-tokens", "2", "--template", "none"]
    assert cli([*base, "--prompt", "<image>\nWhat is it?"]) == 1
    assert "--prompt: row 1: the prompt holds 1 <image> tag(s) for no image" in capsys.readouterr().err
    assert cli([*base, "--prompt", "<image><image><image> What?", "--image", str(tmp_path / "a.png")]) == 1
    assert "the prompt holds 3 <image> tag(s) for one image" in capsys.readouterr().err
    assert cli([*base, "--prompt", "<image>\nWhat?", "--image", str(tmp_path / "a.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["template"] == "none"


def test_cli_warns_of_another_familys_template_and_records_it(built, capsys):
    argv = ["--checkpoint", str(built.flax_dir), "--prompt", "Hi", "--max-new-tokens", "2", "--json"]
    assert cli([*argv, "--template", "minigptv2"]) == 0
    out = capsys.readouterr()
    assert "warning: --template minigptv2 is not a LLaVA template; asking in it anyway" in out.err
    assert json.loads(out.out)["template"] == "minigptv2"
    assert cli([*argv, "--template", "vicuna_v1"]) == 0  # LLaVA's own (training): no warning
    assert "warning" not in capsys.readouterr().err


def test_auto_dtype_is_the_authors_float16_on_a_gpu():
    from vlguard_jax.generate import auto_dtype

    assert (auto_dtype("gpu"), auto_dtype("tpu"), auto_dtype("cpu")) == ("float16", "bfloat16", "float32")
    assert auto_dtype() == "float32"  # this machine


def test_only_prompts_whose_image_inputs_share_a_shape_share_a_batch():
    """Image inputs of several shapes (tiles, dynamic resolution) batch by shape, in order of first
    use; a family whose images have one shape keeps today's batches."""
    from vlguard_jax.generate.sampler import batch_indices

    a, b = ((1, 3, 8, 8),), ((1, 2, 3, 8, 8),)
    assert batch_indices([a, b, a, a, b], 2) == [[0, 2], [3], [1, 4]]
    assert batch_indices([a] * 5, 2) == [[0, 1], [2, 3], [4]]
    assert batch_indices([None] * 3, 8) == [[0, 1, 2]]
