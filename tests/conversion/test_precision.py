"""A conversion keeps each tensor's own precision by default (`--dtype source`), so a float16
release is not rounded to bfloat16 on the way in and a later float32 load is exact; `--dtype`
still casts everything when asked."""

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from tests import tiny
from tests.minigptv2_reference import write_parts
from vlguard_jax.checkpoints.converted import PARAMS_DIR, load_params, param_metadata
from vlguard_jax.checkpoints.loading import load_model
from vlguard_jax.conversion import hf_to_flax, minigptv2
from vlguard_jax.conversion.__main__ import main


def saved_dtypes(ckpt) -> dict[str, np.dtype]:
    meta = traverse_util.flatten_dict(param_metadata(ckpt / PARAMS_DIR), sep="/")
    return {k: np.dtype(m.dtype) for k, m in meta.items()}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A tiny llava-hf checkpoint whose LLM is float16, tower bfloat16 and projector float32."""
    ns = tiny.build(tmp_path_factory.mktemp("mixed") / "m")
    tensors = {}
    for f in sorted(ns.hf_dir.glob("*.safetensors")):
        tensors.update(load_file(f))
        f.unlink()
    cast = lambda k: np.float16 if "language_model" in k or "lm_head" in k else ml_dtypes.bfloat16
    tensors = {k: v if "projector" in k else v.astype(cast(k)) for k, v in tensors.items()}
    save_file(tensors, ns.hf_dir / "model.safetensors")
    return ns, tensors


def test_llava_keeps_each_tensors_precision_and_values(mixed, tmp_path):
    ns, tensors = mixed
    assert main(["hf-to-flax", "--src", str(ns.hf_dir), "--dst", str(tmp_path / "ck")]) == 0
    dtypes = saved_dtypes(tmp_path / "ck")
    assert dtypes["language_model/embed_tokens"] == np.float16
    assert dtypes["vision_tower/position_embedding"] == ml_dtypes.bfloat16
    assert {v for k, v in dtypes.items() if k.startswith("projector/")} == {np.dtype(np.float32)}
    params = traverse_util.flatten_dict(load_params(tmp_path / "ck" / PARAMS_DIR), sep="/")
    embed = [v for k, v in tensors.items() if k.endswith("embed_tokens.weight")][0]
    np.testing.assert_array_equal(np.asarray(params["language_model/embed_tokens"]), embed)
    # Loaded without a dtype: the dtype of the largest tensor (the LLM's); float32 upcasts exactly.
    loaded = load_model(tmp_path / "ck", dtype=np.float32, with_tokenizer=False, scan_layers="off")
    assert {x.dtype for x in jax.tree.leaves(loaded.params)} == {np.dtype(np.float16)}
    exact = load_model(tmp_path / "ck", dtype=np.float32, param_dtype=np.float32, with_tokenizer=False)
    lm = np.asarray(exact.params["language_model"]["embed_tokens"])
    np.testing.assert_array_equal(lm, embed.astype(np.float32))


def test_dtype_still_casts_everything(mixed, tmp_path):
    ns, _ = mixed
    hf_to_flax.convert(ns.hf_dir, tmp_path / "ck", "bfloat16")
    assert set(saved_dtypes(tmp_path / "ck").values()) == {np.dtype(ml_dtypes.bfloat16)}


def test_minigptv2_keeps_the_float16_tower_and_the_float32_positions(tmp_path):
    parts = write_parts(tmp_path / "parts")  # eva_vit_g.pth in float16, as the authors' file
    minigptv2.convert(parts.llm, parts.eva, parts.ckpt, tmp_path / "ck", log=lambda _: None)
    dtypes = saved_dtypes(tmp_path / "ck")
    tower = {v for k, v in dtypes.items() if k.startswith("vision_tower/blocks")}
    assert tower == {np.dtype(np.float16)}
    assert dtypes["vision_tower/pos_embed"] == np.float32  # resized in float32, as their code does
    assert dtypes["llama_proj/kernel"] == np.float32
