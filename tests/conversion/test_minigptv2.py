"""`vlguard-convert minigptv2` from the three files MiniGPT-v2's authors load: a Llama directory,
`eva_vit_g.pth` (float16, one block more than the model builds) and the stage-3
`minigptv2_checkpoint.pth` ({"model": ...}, no ln_vision). The converted checkpoint loads with
`load_model` and gives the reference's logits (tests/minigptv2_reference.py, with the authors'
position resize and LoRA through peft); bad parts are refused naming file and tensor."""

import json
import os
import stat

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from tests.minigptv2_reference import WIDTH, write_parts
from vlguard_jax import load_model
from vlguard_jax.conversion.__main__ import main as convert_cli
from vlguard_jax.conversion.minigptv2 import convert
from vlguard_jax.data.images import squash_preprocess
from vlguard_jax.data.sample import write_sample
from vlguard_jax.errors import CheckpointError
from vlguard_jax.evaluate.runner import Evaluation, Protocol, run
from vlguard_jax.generate import Sampling, load_generator, prompt_ids
from vlguard_jax.models.minigptv2 import LORA


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return write_parts(tmp_path_factory.mktemp("minigptv2"))


@pytest.mark.parametrize("lora", ["keep", "merge"])
def test_the_converted_checkpoint_gives_the_references_logits(parts, tmp_path, capsys, lora):
    said = []
    config = convert(parts.llm, parts.eva, parts.ckpt, tmp_path / "ck", "float32", lora, log=said.append)
    v = config.vision
    assert (v.num_hidden_layers, v.hidden_size, v.num_attention_heads, v.grid) == (2, WIDTH, 2, 8)
    assert config.num_image_tokens == 16 and config.image_token_index == config.text.vocab_size
    assert any("no ln_vision" in s for s in said)
    m = load_model(tmp_path / "ck", dtype=jnp.float32)
    assert isinstance(m.config, type(config))
    assert m.model.lora == (LORA if lora == "keep" else None)  # kept factors: the model applies them
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(1, 3, 448, 448)).astype(np.float32)
    before, after = rng.integers(3, 300, size=(1, 6)), rng.integers(3, 300, size=(1, 5))
    ids = np.concatenate([before, np.full((1, 16), config.image_token_index), after], axis=1)
    ours, _ = m.model.apply({"params": m.params}, jnp.asarray(ids), jnp.asarray(pixels))
    with torch.no_grad():
        theirs = parts.reference.logits(torch.tensor(before), torch.tensor(pixels), torch.tensor(after)).numpy()
    assert np.abs(np.asarray(ours) - theirs).max() <= 1e-4 * np.abs(theirs).max()
    if lora == "merge":
        return
    # The same through the front door, which refuses an existing DST without --overwrite.
    args = ["minigptv2", "--llm", str(parts.llm), "--vision-tower", str(parts.eva), "--checkpoint", str(parts.ckpt)]
    assert convert_cli([*args, "--dst", str(tmp_path / "ck"), "--dtype", "float32"]) == 1
    assert "exists" in capsys.readouterr().err
    assert convert_cli([*args, "--dst", str(tmp_path / "ck"), "--dtype", "float32", "--overwrite"]) == 0
    assert "2-block EVA (176 wide, 2 heads) at 448 px, 16 visual tokens, LoRA kept" in capsys.readouterr().out


def test_flax_to_minigptv2_writes_back_every_tensor_of_the_authors_checkpoint(parts, tmp_path, capsys):
    convert(parts.llm, parts.eva, parts.ckpt, tmp_path / "ck", dtype="float32", log=lambda _: None)
    dst = tmp_path / "out" / "minigptv2_checkpoint.pth"
    assert convert_cli(["flax-to-minigptv2", "--src", str(tmp_path / "ck"), "--dst", str(dst)]) == 0
    assert "wrote" in capsys.readouterr().out
    original = torch.load(parts.ckpt, weights_only=True)["model"]
    written = torch.load(dst, weights_only=True)
    assert list(written) == ["model"]
    # ln_vision was not in the authors' file: written as loaded (1 and 0), besides every tensor they had.
    assert set(written["model"]) == set(original) | {"ln_vision.weight", "ln_vision.bias"}
    for name, tensor in original.items():
        assert torch.equal(written["model"][name], tensor.float()), name
    assert torch.equal(written["model"]["ln_vision.weight"], torch.ones(WIDTH))
    assert [p.name for p in dst.parent.iterdir()] == [dst.name]  # no temporary file left
    merged = tmp_path / "merged"
    convert(parts.llm, parts.eva, parts.ckpt, merged, dtype="float32", lora="merge", log=lambda _: None)
    assert convert_cli(["flax-to-minigptv2", "--src", str(merged), "--dst", str(tmp_path / "m.pth")]) == 1
    assert "convert with --lora keep" in capsys.readouterr().err


def test_flax_to_minigptv2_refuses_what_it_cannot_write_and_writes_a_readable_file(parts, tmp_path, capsys):
    convert(parts.llm, parts.eva, parts.ckpt, tmp_path / "ck", dtype="float32", log=lambda _: None)
    src = ["flax-to-minigptv2", "--src", str(tmp_path / "ck")]
    (tmp_path / "folder").mkdir()
    assert convert_cli([*src, "--dst", str(tmp_path / "folder"), "--overwrite"]) == 1
    assert "a folder; name the .pth file to write" in capsys.readouterr().err
    assert convert_cli([*src, "--dst", "s3://bucket/x.pth"]) == 1
    assert "written to a local path" in capsys.readouterr().err
    old = os.umask(0o022)
    try:
        assert convert_cli([*src, "--dst", str(tmp_path / "x.pth")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.pth").stat().st_mode) == 0o644


def test_the_tower_file_is_named_in_its_errors(parts, tmp_path, capsys):
    sd = torch.load(parts.eva, weights_only=True)
    gap = {k: v for k, v in sd.items() if not k.startswith("blocks.1.")}
    torch.save(gap, tmp_path / "gap.pth")
    with pytest.raises(CheckpointError, match=r"gap.pth: blocks \[0, 2\]"):
        convert(parts.llm, tmp_path / "gap.pth", parts.ckpt, tmp_path / "out", log=lambda _: None)
    torch.save(dict(sd, pos_embed=sd["pos_embed"][:, :-1]), tmp_path / "pos.pth")
    with pytest.raises(CheckpointError, match=r"pos.pth: tensor 'pos_embed' has shape \(1, 16, 176\)"):
        convert(parts.llm, tmp_path / "pos.pth", parts.ckpt, tmp_path / "out", log=lambda _: None)
    argv = ["minigptv2", "--llm", str(parts.llm), "--vision-tower", str(parts.eva), "--checkpoint", str(parts.ckpt)]
    assert convert_cli([*argv, "--dst", str(tmp_path / "out"), "--vision-heads", "0"]) == 2
    assert "--vision-heads" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_prompt_ids_are_the_authors_two_bos_then_the_segments(parts, tmp_path):
    """`<s>[INST] <Img><ImageHere></Img> Q [/INST]` cut at the image: the first segment with the
    tokenizer's BOS (and `<s>` read as a second), the rest without (minigpt_base.get_context_emb)."""
    config = convert(parts.llm, parts.eva, parts.ckpt, tmp_path / "ck", dtype="float32", log=lambda _: None)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "ck")
    ids = prompt_ids(tok, config, "What is shown in the image?", True, "minigptv2")
    first = tok("<s>[INST] <Img>", add_special_tokens=True).input_ids
    rest = tok("</Img> What is shown in the image? [/INST]", add_special_tokens=False).input_ids
    assert first[:2] == [tok.bos_token_id] * 2
    assert ids == first + [config.image_token_index] * config.num_image_tokens + rest
    assert tok.pad_token == "$$"


def test_greedy_generation_is_the_references(parts, tmp_path):
    config = convert(parts.llm, parts.eva, parts.ckpt, tmp_path / "ck", dtype="float32", log=lambda _: None)
    gen, m = load_generator(str(tmp_path / "ck"), dtype=jnp.float32, batch_size=2)
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (300, 200, 3), dtype=np.uint8))
    pixels = squash_preprocess(image, 448)
    questions = ["What is shown in the image?", "Sure, here is how to do it step by step"]
    prompts = [prompt_ids(m.tokenizer, config, q, True, "minigptv2") for q in questions]
    ours = gen(prompts, [pixels, pixels], Sampling(max_new_tokens=8))
    for ids, got in zip(prompts, ours):
        k = ids.index(config.image_token_index)
        before, after = ids[:k], ids[k + config.num_image_tokens :]
        with torch.no_grad():
            embeds = parts.reference.embeds(torch.tensor([before]), torch.tensor(pixels[None]), torch.tensor([after]))
            theirs = parts.reference.llama_model.generate(
                inputs_embeds=embeds,
                attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                max_new_tokens=8,
                num_beams=1,
                do_sample=False,
                min_length=1,
                repetition_penalty=1.0,
                pad_token_id=0,
            )
        assert list(got) == theirs[0].tolist() and len(got) >= 2


def test_a_vlguard_evaluation_runs_on_it(parts, tmp_path):
    convert(parts.llm, parts.eva, parts.ckpt, tmp_path / "ck", dtype="float32", log=lambda _: None)
    sample = write_sample(tmp_path / "sample", n_train=8, n_test=8, n_helpful=8)
    e = Evaluation(
        str(tmp_path / "ck"),
        "vlguard",
        tmp_path / "eval",
        subset="unsafes",
        meta=sample["test"],
        images=sample["images"],
        limit=3,
        protocol=Protocol(max_new_tokens=4, batch_size=2, dtype="float32"),
    )
    result = run(e, log=lambda *_: None)
    assert result["n"] == 3 and 0.0 <= result["asr"] <= 1.0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())["vlguard/unsafes"]
    assert summary["protocol"]["template"] == "minigptv2" and summary["model"] == "vllm"
    assert len(json.loads((tmp_path / "eval" / "vlguard" / "unsafes.json").read_text())) == 3


def test_parts_that_do_not_fit_are_named(tmp_path):
    bad = write_parts(tmp_path / "wide", proj_in=4 * WIDTH + 4)
    with pytest.raises(
        CheckpointError,
        match=r"minigptv2_checkpoint.pth: tensor 'llama_proj.weight' has shape "
        r"\(64, 708\); the parts do not fit: the tower's width 176 x 4 = 704",
    ):
        convert(bad.llm, bad.eva, bad.ckpt, tmp_path / "out", log=lambda _: None)
    factor = "llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    missing = write_parts(tmp_path / "missing", drop=(factor,))
    with pytest.raises(CheckpointError, match=rf"minigptv2_checkpoint.pth: missing tensor '{factor}'"):
        convert(missing.llm, missing.eva, missing.ckpt, tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()  # nothing half-written
