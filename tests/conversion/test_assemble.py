"""Assembling LLaVA-1.5's starting point (the mixed recipe's) from Vicuna, CLIP and the stage-1
projector: float32 logits equal an HF `LlavaForConditionalGeneration` built from the same three
parts, in every input layout; bad parts fail naming the file and tensor, leaving nothing."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from tests import tiny
from vlguard_jax import load_model
from vlguard_jax.conversion.llava_assemble import assemble, main
from vlguard_jax.conversion.reader import CheckpointError


def hf_reference(parts):
    """transformers' LLaVA holding the same three parts; the vocabulary padded with zero rows so
    that the new `<image>` id (one past Vicuna's vocabulary) has an embedding row to look up."""
    vocab = len(parts.tok)
    image_id = vocab  # what adding <image> to the tokenizer gives
    text_cfg = parts.llm.config.to_dict()
    text_cfg["vocab_size"] = vocab + 64
    vision = parts.clip.config.vision_config if hasattr(parts.clip.config, "vision_config") else parts.clip.config
    cfg = transformers.LlavaConfig(
        text_config=transformers.LlamaConfig(**text_cfg),
        vision_config=vision.to_dict(),
        image_token_index=image_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    model = transformers.LlavaForConditionalGeneration(cfg).eval()
    pad = lambda w: torch.cat([w, torch.zeros(64, w.shape[1])])
    lm = {k[len("model.") :]: v for k, v in parts.llm.state_dict().items() if k.startswith("model.")}
    lm["embed_tokens.weight"] = pad(lm["embed_tokens.weight"])
    model.model.language_model.load_state_dict(lm, strict=False)
    model.lm_head.weight.data = pad(parts.llm.lm_head.weight.data)
    tower = {
        k.removeprefix("vision_model."): v
        for k, v in parts.clip.state_dict().items()
        if not k.startswith(("text_model.", "logit_scale", "text_projection", "visual_projection"))
    }
    model.model.vision_tower.load_state_dict(tower)
    p = parts.proj
    with torch.no_grad():
        for ours, theirs in (("linear_1", "0"), ("linear_2", "2")):
            layer = getattr(model.model.multi_modal_projector, ours)
            layer.weight.copy_(p[f"{parts.prefix}{theirs}.weight"].float())
            layer.bias.copy_(p[f"{parts.prefix}{theirs}.bias"].float())
    return model, image_id


def inputs(image_id, vocab, n_img=4, seed=0):
    rng = np.random.default_rng(seed)
    rows = [
        [1] + [image_id] * n_img + rng.integers(3, vocab - 1, 7).tolist(),
        [1] + rng.integers(3, vocab - 1, 11).tolist(),
        [1] + rng.integers(3, vocab - 1, 3).tolist() + [image_id] * n_img + rng.integers(3, vocab - 1, 2).tolist(),
    ]
    t = max(map(len, rows))
    ids, mask = np.zeros((3, t), np.int64), np.zeros((3, t), np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    pixels = rng.normal(size=(2, 3, 28, 28)).astype(np.float32)
    return ids, mask, pixels


LAYOUTS = {
    "safetensors LLM, CLIPModel, fp16 .bin projector": {},
    ".bin LLM, CLIPVisionModel, bf16 safetensors projector without prefix": dict(
        llm_format="bin",
        full_clip=False,
        proj_format="safetensors",
        proj_prefix="mm_projector.",
        proj_dtype=torch.bfloat16,
    ),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_assembled_logits_equal_transformers_llava_from_the_same_parts(tmp_path, name):
    parts = tiny.llava_parts(tmp_path, **LAYOUTS[name])
    config = assemble(parts.llm_dir, parts.clip_dir, parts.proj_file, tmp_path / "out", "float32")
    ref, image_id = hf_reference(parts)
    assert config.image_token_index == image_id and config.vision_feature_layer == -2
    assert config.vision_feature_select_strategy == "default" and config.num_image_tokens == 4
    ids, mask, pixels = inputs(image_id, len(parts.tok))
    want = tiny.torch_logits(ref, ids, mask, pixels)[..., : len(parts.tok)]
    m = load_model(tmp_path / "out", dtype=jnp.float32)
    got, _ = m.model.apply({"params": m.params}, jnp.asarray(ids), jnp.asarray(tiny.row_pixels(ids, config, pixels)))
    assert tiny.rel_err(got, want, mask) <= 1e-4
    # The tokenizer is Vicuna's with <image> added; the image processor fits the tower.
    assert m.tokenizer.convert_tokens_to_ids("<image>") == image_id
    assert m.tokenizer("<image>").input_ids[-1] == image_id
    pre = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert pre["crop_size"] == {"height": 28, "width": 28}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return tiny.llava_parts(tmp_path_factory.mktemp("parts"))


def _fails(tmp_path, match, llm=None, tower=None, proj=None, parts=None):
    dst = tmp_path / "dst"
    with pytest.raises(CheckpointError, match=match):
        assemble(llm or parts.llm_dir, tower or parts.clip_dir, proj or parts.proj_file, dst, "float32")
    assert not dst.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".dst")]


def test_projector_that_does_not_fit_names_file_and_tensor(parts, tmp_path):
    wrong = {k: v for k, v in parts.proj.items()}
    wrong["model.mm_projector.0.weight"] = torch.zeros(64, 32, dtype=torch.float16)  # a 64-wide LLM's projector
    torch.save(wrong, tmp_path / "p.bin")
    _fails(
        tmp_path,
        r"p\.bin: tensor 'model\.mm_projector\.0\.weight' has shape \(64, 32\), expected \(48, 32\) \(PyTorch's "
        r"\[out, in\] layout\) for projector/linear_1/kernel .*tower's 32-wide features to the LLM's hidden size 48",
        proj=tmp_path / "p.bin",
        parts=parts,
    )
    torch.save({k: v for k, v in parts.proj.items() if "2.bias" not in k}, tmp_path / "q.bin")
    _fails(
        tmp_path,
        r"missing tensor 'model\.mm_projector\.2\.bias' \(for projector/linear_2/bias\)",
        proj=tmp_path / "q.bin",
        parts=parts,
    )
    torch.save(dict(parts.proj, **{"model.mm_projector.4.weight": torch.zeros(2)}), tmp_path / "r.bin")
    _fails(
        tmp_path, r"r\.bin: unexpected tensor 'model\.mm_projector\.4\.weight'", proj=tmp_path / "r.bin", parts=parts
    )


def test_projectors_nested_transposed_or_quantised(parts, tmp_path):
    torch.save({"model": dict(parts.proj), "epoch": 3}, tmp_path / "nested.bin")  # as some releases ship it
    assemble(parts.llm_dir, parts.clip_dir, tmp_path / "nested.bin", tmp_path / "ok", "float32")
    assert (tmp_path / "ok").is_dir()
    flipped = dict(parts.proj, **{"model.mm_projector.0.weight": parts.proj["model.mm_projector.0.weight"].T.clone()})
    torch.save(flipped, tmp_path / "t.bin")
    _fails(
        tmp_path,
        r"t\.bin: tensor 'model\.mm_projector\.0\.weight' has shape \(32, 48\), expected \(48, 32\) \(PyTorch's",
        proj=tmp_path / "t.bin",
        parts=parts,
    )
    quantised = dict(parts.proj, **{"model.mm_projector.2.weight": torch.zeros(48, 48, dtype=torch.int8)})
    torch.save(quantised, tmp_path / "i.bin")
    _fails(
        tmp_path,
        r"i\.bin: tensor 'model\.mm_projector\.2\.weight' is int8, not floating point",
        proj=tmp_path / "i.bin",
        parts=parts,
    )
    torch.save({"model": dict(parts.proj), "step": torch.zeros(1), "opt": [1]}, tmp_path / "odd.bin")
    _fails(tmp_path, r"odd\.bin: entry 'model' is a dict, not a tensor", proj=tmp_path / "odd.bin", parts=parts)


def test_unknown_or_missing_parts_are_named(parts, tmp_path):
    torch.save({"resampler.weight": torch.zeros(2, 2)}, tmp_path / "x.bin")
    _fails(tmp_path, r"x\.bin: not a LLaVA mlp2x_gelu projector", proj=tmp_path / "x.bin", parts=parts)
    _fails(tmp_path, r"nope\.bin: no such file \(--projector\)", proj=tmp_path / "nope.bin", parts=parts)
    _fails(tmp_path, r"missing: no such directory \(--llm\)", llm=tmp_path / "missing", parts=parts)
    _fails(tmp_path, r"vicuna/config\.json: model_type 'llama' is not a CLIP model", tower=parts.llm_dir, parts=parts)
    llava = tiny.build(tmp_path / "llava")
    _fails(tmp_path, r"hf: a llava_hf checkpoint .* not a base LlamaForCausalLM", llm=llava.hf_dir, parts=parts)


def test_cli_writes_once_and_refuses_an_existing_destination(parts, tmp_path, capsys):
    args = [
        "--llm",
        str(parts.llm_dir),
        "--vision-tower",
        str(parts.clip_dir),
        "--projector",
        str(parts.proj_file),
        "--dst",
        str(tmp_path / "out"),
    ]
    assert main(args) == 0
    assert "3-layer CLIP, <image> = id" in capsys.readouterr().out
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err
