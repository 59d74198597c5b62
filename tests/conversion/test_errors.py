"""Bad input fails with a message naming the file and tensor, and never leaves a checkpoint."""

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests import tiny
from vlguard_jax.conversion.flax_to_hf import main as flax_to_hf_main
from vlguard_jax.conversion.hf_to_flax import convert, main
from vlguard_jax.conversion.reader import CheckpointError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny.build(tmp_path_factory.mktemp("err"))


def _copy(built, tmp_path, edit=None):
    d = tmp_path / "src"
    shutil.copytree(built.hf_dir, d)
    if edit:
        sd = load_file(d / "model.safetensors")
        edit(sd)
        save_file(sd, d / "model.safetensors")
    return d


def _fails(src, tmp_path, match, **kw):
    dst = tmp_path / "dst"
    with pytest.raises(CheckpointError, match=match):
        convert(src, dst, "float32", **kw)
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dst")], "temporary left behind"


def test_missing_tensor(built, tmp_path):
    src = _copy(built, tmp_path, lambda sd: sd.pop("language_model.model.layers.1.mlp.up_proj.weight"))
    _fails(src, tmp_path, r"src: missing tensor 'language_model\.model\.layers\.1\.mlp\.up_proj\.weight'")


def test_unexpected_tensor(built, tmp_path):
    src = _copy(built, tmp_path, lambda sd: sd.update({"language_model.model.extra.weight": torch.ones(2)}))
    _fails(src, tmp_path, r"model\.safetensors: unexpected tensor 'language_model\.model\.extra\.weight'")


def test_shape_mismatch(built, tmp_path):
    def edit(sd):
        sd["multi_modal_projector.linear_1.weight"] = torch.ones(7, 7)

    src = _copy(built, tmp_path, edit)
    _fails(
        src,
        tmp_path,
        r"model\.safetensors: tensor 'multi_modal_projector\.linear_1\.weight' has "
        r"shape \(7, 7\), expected \(48, 32\) \(PyTorch's \[out, in\] layout\) for projector/linear_1/kernel",
    )


def test_unknown_layout(built, tmp_path):
    src = _copy(built, tmp_path)
    save_file({"encoder.weight": torch.ones(2)}, src / "model.safetensors")
    _fails(src, tmp_path, r"src: unknown checkpoint layout.*encoder\.weight")


def test_truncated_file_header(built, tmp_path):
    src = _copy(built, tmp_path)
    (src / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:100])
    _fails(src, tmp_path, r"model\.safetensors: cannot read safetensors header")


def test_truncated_file_data(built, tmp_path):
    src = _copy(built, tmp_path)
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) - 1000])
    _fails(src, tmp_path, r"model\.safetensors")


def test_index_names_missing_shard(built, tmp_path):
    src = _copy(built, tmp_path)
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    _fails(src, tmp_path, r"model\.safetensors\.index\.json: lists shard gone\.safetensors")


def test_bad_config_json(built, tmp_path):
    src = _copy(built, tmp_path)
    (src / "config.json").write_text("{not json")
    _fails(src, tmp_path, r"config\.json: invalid JSON")


def test_original_layout_without_tower_needs_vision_tower_flag(built, tmp_path):
    from tests.conversion.test_roundtrip import _original_layout

    _original_layout(built, tmp_path / "orig", with_tower=False)
    _fails(
        tmp_path / "orig",
        tmp_path,
        r"orig: the CLIP tower weights are not in this checkpoint; "
        r"pass --vision-tower",
    )


def test_destination_exists_is_refused_and_untouched(built, tmp_path, capsys):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    assert main(["--src", str(built.hf_dir), "--dst", str(dst)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert os.listdir(dst) == ["keep.txt"]


def test_cli_reports_errors_without_traceback(built, tmp_path, capsys):
    src = _copy(built, tmp_path, lambda sd: sd.pop("language_model.model.norm.weight"))
    assert main(["--src", str(src), "--dst", str(tmp_path / "dst"), "--dtype", "float32"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "language_model.model.norm.weight" in err
    assert flax_to_hf_main(["--src", str(src), "--dst", str(tmp_path / "x")]) == 1
    assert "not a vlguard-jax checkpoint" in capsys.readouterr().err


def _bin_checkpoint(built, tmp_path):
    d = tmp_path / "bin"
    shutil.copytree(built.hf_dir, d)
    sd = load_file(d / "model.safetensors")
    os.remove(d / "model.safetensors")
    torch.save(sd, d / "pytorch_model.bin")
    return d


def test_bin_weights_convert_like_safetensors(built, tmp_path):
    import jax.numpy as jnp

    from vlguard_jax import load_model

    convert(_bin_checkpoint(built, tmp_path), tmp_path / "fx", "float32")
    a = load_model(tmp_path / "fx", dtype=jnp.float32).params
    b = load_model(built.flax_dir, dtype=jnp.float32).params
    import jax

    jax.tree.map(np.testing.assert_array_equal, a, b)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/vlguard_pwned",))


def test_bin_with_arbitrary_pickle_is_refused(built, tmp_path):
    d = _bin_checkpoint(built, tmp_path)
    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    _fails(d, tmp_path, r"pytorch_model\.bin: cannot load with torch\.load\(weights_only=True\)")
    assert not os.path.exists("/tmp/vlguard_pwned")


def test_failure_mid_stream_leaves_nothing(built, tmp_path, monkeypatch):
    """Headers pass the checks but a tensor fails to read halfway through the write."""
    from vlguard_jax.conversion.reader import TensorSource

    real, calls = TensorSource.get, []

    def flaky(self, name):
        calls.append(name)
        if len(calls) == 20:
            raise CheckpointError(f"{self.index[name]}: cannot read tensor {name!r} (simulated)")
        return real(self, name)

    monkeypatch.setattr(TensorSource, "get", flaky)
    with pytest.raises(CheckpointError, match="simulated"):
        convert(built.hf_dir, tmp_path / "dst", "float32", flush_bytes=1)
    assert len(calls) == 20
    assert os.listdir(tmp_path) == []


def test_each_family_exports_with_its_own_converter(built, tmp_path, capsys):
    """A checkpoint given to another family's exporter is refused in one line that names the
    exporter its family has (`Family.export_command`), and nothing is written."""
    from vlguard_jax.conversion.flax_to_minigptv2 import main as flax_to_minigptv2_main

    assert flax_to_minigptv2_main(["--src", str(built.flax_dir), "--dst", str(tmp_path / "x.pth")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"error: {built.flax_dir}: a LLaVA checkpoint, which conversion.flax_to_minigptv2 does not write; "
        "export it with vlguard_jax.conversion.flax_to_hf"
    ]
    guard = tiny.build_llama(tmp_path / "guard")
    assert flax_to_hf_main(["--src", str(guard.flax_dir), "--dst", str(tmp_path / "hf")]) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("a text-only Llama checkpoint, which conversion.flax_to_hf does not write; it has no export")
    )
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "hf").exists()


def test_a_model_type_no_family_reads_is_refused_in_one_line(built, tmp_path, capsys):
    """Qwen2-VL (not a family here) is refused before a tensor is read, naming what is read."""
    src = _copy(built, tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(dict(cfg, model_type="qwen2_vl")))
    assert main(["--src", str(src), "--dst", str(tmp_path / "dst"), "--dtype", "float32"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {src / 'config.json'}: model_type 'qwen2_vl' is no model family's this converter reads "
        "(llama, llava, llava_llama, qwen2_5_vl)"
    ]
    assert not (tmp_path / "dst").exists()


def test_a_family_with_its_own_converter_gets_its_checkpoints(built, tmp_path, monkeypatch):
    """hf_to_flax hands a checkpoint whose model_type a family claims to that family's converter
    (`Family.hf_converter`), with the command's arguments: a new family registers, nothing else."""
    import dataclasses
    import sys
    import types

    from vlguard_jax import families

    calls = []
    module = types.ModuleType("toy_family_converter")
    module.convert = lambda *a, **kw: calls.append((a, kw)) or "converted"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "toy_family_converter", module)
    toy = dataclasses.replace(
        families.LLAVA, name="toy", hf_model_types=("toy_vl",), hf_converter="toy_family_converter"
    )
    monkeypatch.setitem(families.FAMILIES, "toy", toy)
    src = _copy(built, tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(dict(cfg, model_type="toy_vl")))
    assert convert(src, tmp_path / "dst", "bfloat16", overwrite=True) == "converted"
    want = {"flush_bytes": 64 << 20, "overwrite": True, "pixels": (None, None)}
    assert calls == [((src, tmp_path / "dst", "bfloat16", None), want)]
    assert not (tmp_path / "dst").exists()


def test_the_pixel_range_flags_are_refused_for_fixed_size_images(built, tmp_path, capsys):
    """--min-pixels/--max-pixels set the range of a family whose images keep their size; a
    LLaVA's images are one size, so they are refused in one line and nothing is written."""
    argv = ["--src", str(built.hf_dir), "--dst", str(tmp_path / "dst"), "--max-pixels", "9999"]
    assert main(argv) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --min-pixels and --max-pixels apply to checkpoints whose images keep their size; {built.hf_dir} is not one"
    ]
    assert not (tmp_path / "dst").exists()
