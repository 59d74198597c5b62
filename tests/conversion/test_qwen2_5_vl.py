"""Qwen2.5-VL conversion: both config layouts users have (the Hub's flat one, transformers 5's
nested one) and both tensor namings read to the same weights; `flax-to-hf` writes the Hub's
layout, which transformers loads with the original's logits, bit-exact on the way back; bad
checkpoints are refused naming the file and tensor."""

import json
import shutil

import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from tests import tiny_qwen
from vlguard_jax.checkpoints.converted import PARAMS_DIR, load_params
from vlguard_jax.conversion.flax_to_hf import export
from vlguard_jax.conversion.hf_to_flax import convert, main
from vlguard_jax.families import family_of, load_config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny_qwen.build(tmp_path_factory.mktemp("qwen"))


def flat_params(path):
    return traverse_util.flatten_dict(load_params(path / PARAMS_DIR), sep="/")


def same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_the_hub_layout_is_written_and_read_back_bit_exact(built, tmp_path):
    export(built.flax_dir, tmp_path / "hub")
    hub = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert "text_config" not in hub and hub["rope_scaling"]["type"] == "mrope"  # the Hub's flat layout
    original = load_file(built.hf_dir / "model.safetensors")
    written = load_file(tmp_path / "hub" / "model.safetensors")
    assert written.keys() == original.keys()
    for k in original:
        np.testing.assert_array_equal(written[k], original[k], err_msg=k)
    # transformers reads it, with the original's logits
    again = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
        tmp_path / "hub", attn_implementation="eager"
    ).eval()
    ids = torch.tensor([tiny_qwen.prompt(0, 9, 0)])
    with torch.no_grad():
        np.testing.assert_array_equal(again(input_ids=ids).logits.numpy(), built.model(input_ids=ids).logits.numpy())
    # and so does our converter: the same config and weights
    convert(tmp_path / "hub", tmp_path / "back", "float32")
    assert load_config(tmp_path / "back" / "model_config.json") == load_config(built.flax_dir / "model_config.json")
    same_params(flat_params(tmp_path / "back"), flat_params(built.flax_dir))


def test_the_hubs_processor_keys_and_the_nested_tensor_names_read_the_same(built, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(built.hf_dir, src)
    pre = json.loads((src / "preprocessor_config.json").read_text())
    size = pre.pop("size")
    pre.update(min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])
    (src / "preprocessor_config.json").write_text(json.dumps(pre))
    tensors = load_file(src / "model.safetensors")
    renamed = {
        (
            "model.language_model." + k[6:]
            if k.startswith("model.")
            else "model." + k
            if k.startswith("visual.")
            else k
        ): v
        for k, v in tensors.items()
    }
    save_file(renamed, str(src / "model.safetensors"))
    convert(src, tmp_path / "out", "float32")
    config = load_config(tmp_path / "out" / "model_config.json")
    assert (config.min_pixels, config.max_pixels) == (tiny_qwen.MIN_PIXELS, tiny_qwen.MAX_PIXELS)
    assert config == load_config(built.flax_dir / "model_config.json")
    same_params(flat_params(tmp_path / "out"), flat_params(built.flax_dir))


def _edit(built, tmp_path, config=None, tensors=None):
    src = tmp_path / "src"
    shutil.copytree(built.hf_dir, src)
    if config:
        cfg = json.loads((src / "config.json").read_text())
        config(cfg)
        (src / "config.json").write_text(json.dumps(cfg))
    if tensors:
        t = load_file(src / "model.safetensors")
        tensors(t)
        save_file(t, str(src / "model.safetensors"))
    return src


def refused(src, tmp_path, capsys) -> str:
    assert main(["--src", str(src), "--dst", str(tmp_path / "dst"), "--dtype", "float32"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and not (tmp_path / "dst").exists()
    return err[0]


def test_a_missing_tensor_is_named_with_its_file(built, tmp_path, capsys):
    src = _edit(built, tmp_path, tensors=lambda t: t.pop("visual.blocks.1.attn.qkv.bias"))
    assert refused(src, tmp_path, capsys) == (
        f"error: {src}: missing tensor 'visual.blocks.1.attn.qkv.bias' (for visual/blocks_1/qkv/bias)"
    )


def test_a_misshapen_tensor_is_named_with_its_file(built, tmp_path, capsys):
    def cut(t):
        t["visual.merger.mlp.2.weight"] = t["visual.merger.mlp.2.weight"][:5]

    src = _edit(built, tmp_path, tensors=cut)
    err = refused(src, tmp_path, capsys)
    assert err.startswith(f"error: {src / 'model.safetensors'}: tensor 'visual.merger.mlp.2.weight' has shape (5, 128)")


def test_an_extra_tensor_is_named(built, tmp_path, capsys):
    src = _edit(built, tmp_path, tensors=lambda t: t.update({"visual.extra.weight": np.zeros(3, np.float32)}))
    assert "unexpected tensor 'visual.extra.weight'" in refused(src, tmp_path, capsys)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda c: c["text_config"].update(use_sliding_window=True), "use_sliding_window is set"),
        (
            lambda c: c["text_config"].update(rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
            "mrope_section",
        ),
        (lambda c: c.update(model_type="qwen2_vl"), "model_type 'qwen2_vl' is no model family's"),
    ],
)
def test_a_config_this_port_does_not_run_is_refused_in_one_line(built, tmp_path, capsys, edit, says):
    src = _edit(built, tmp_path, config=edit)
    assert says in refused(src, tmp_path, capsys)


def test_the_pixel_range_given_at_conversion_is_the_checkpoints(built, tmp_path, capsys):
    """--min-pixels/--max-pixels set the processor's range, as AutoProcessor's arguments do; it
    is recorded for every command that reads the checkpoint, and transformers' processor reads it
    back from the converted folder."""
    dst = tmp_path / "ck"
    assert main(["--src", str(built.hf_dir), "--dst", str(dst), "--max-pixels", str(28 * 28 * 8)]) == 0
    config = load_config(dst / "model_config.json")
    assert (config.min_pixels, config.max_pixels) == (tiny_qwen.MIN_PIXELS, 28 * 28 * 8)
    pre = json.loads((dst / "preprocessor_config.json").read_text())
    assert pre["size"] == {"shortest_edge": tiny_qwen.MIN_PIXELS, "longest_edge": 28 * 28 * 8}
    theirs = tiny_qwen.Qwen2VLImageProcessorPil.from_pretrained(dst)
    ours = family_of(config).image_input(config).pixels(tiny_qwen.image(400, 300), pad=False)
    assert theirs(images=[tiny_qwen.image(400, 300)])["image_grid_thw"].tolist() == [[1, *ours["grid"]]] == [[1, 4, 6]]
    assert (
        main(["--src", str(built.hf_dir), "--dst", str(tmp_path / "x"), "--min-pixels", "9", "--max-pixels", "4"]) == 1
    )
    assert "min_pixels 9 and max_pixels 4 are not a range" in capsys.readouterr().err


def test_a_checkpoint_without_a_processor_file_gets_qwens_with_its_defaults(built, tmp_path):
    src = _edit(built, tmp_path)
    (src / "preprocessor_config.json").unlink()
    convert(src, tmp_path / "out", "float32")
    config = load_config(tmp_path / "out" / "model_config.json")
    assert (config.min_pixels, config.max_pixels) == (56 * 56, 28 * 28 * 1280)  # the processor's defaults
    pre = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"] == "Qwen2VLImageProcessor"
    assert pre["size"] == {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}
