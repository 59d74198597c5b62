"""A training run is loaded at the cost of its weights: only its trained parameters are read
(never the optimizer state), straight into their place on the mesh, over the base's others, and
the LoRA factors are merged on the devices. The result equals the host path (`runs.load_merged`)
that the exports use."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import traverse_util

from tests import tiny
from vlguard_jax.checkpoints import runs
from vlguard_jax.checkpoints.converted import PARAMS_DIR, load_params
from vlguard_jax.checkpoints.loading import load_model
from vlguard_jax.checkpoints.runs import RunMeta
from vlguard_jax.checkpoints.training import Checkpoints
from vlguard_jax.models.config import LoraSpec
from vlguard_jax.models.stacking import to_stacked
from vlguard_jax.sharding import make_mesh

MB = 1 << 20


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny.build(tmp_path_factory.mktemp("loading") / "model")


def trained_params(base_dir, rank=2, seed=0) -> dict:
    """A LoRA run's trainable tree: factors on every q/v kernel and a moved projector."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(load_params(base_dir / PARAMS_DIR))
    out = {}
    for k, v in flat.items():
        v = np.asarray(v)
        if k[0] == "projector":
            out[k] = (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32)
        elif k[0] == "language_model" and k[-2] in ("q_proj", "v_proj") and k[-1] == "kernel":
            out[k[:-1] + ("lora_a",)] = 0.1 * rng.standard_normal((v.shape[0], rank)).astype(np.float32)
            out[k[:-1] + ("lora_b",)] = 0.1 * rng.standard_normal((rank, v.shape[1])).astype(np.float32)
    return traverse_util.unflatten_dict(out)


def write_run(workdir, base_dir, params, mode="lora", scan=False) -> None:
    """A run's checkpoint as training writes it: params, Adam moments of the same shapes, step."""
    if scan:
        params = to_stacked(params)
    zeros = jax.tree.map(np.zeros_like, params)
    state = {"step": np.int32(3), "params": params, "opt_state": {"mu": zeros, "nu": zeros}}
    meta = RunMeta(str(base_dir), mode, LoraSpec(2, 4.0) if mode == "lora" else None, scan_layers=scan)
    ckpt = Checkpoints(workdir, every=1, keep=2)
    ckpt.save(3, state, {"epoch": 0}, meta, force=True)
    ckpt.wait()
    ckpt.close()


def host_merged(workdir) -> dict:
    return runs.load_merged(workdir)[2]


@pytest.mark.parametrize("scan", [False, True])
def test_a_lora_run_loads_as_the_host_merge_gives_it(model, tmp_path, scan):
    write_run(tmp_path / "run", model.flax_dir, trained_params(model.flax_dir), scan=scan)
    loaded = load_model(tmp_path / "run", with_tokenizer=False, scan_layers="off")
    got = traverse_util.flatten_dict(loaded.params)
    want = host_merged(tmp_path / "run")
    assert set(got) == set(want)
    for k, v in want.items():
        np.testing.assert_allclose(np.asarray(got[k]), v, rtol=1e-6, atol=1e-7, err_msg="/".join(k))
    q = ("language_model", "layers_1", "self_attn", "q_proj", "kernel")
    base = traverse_util.flatten_dict(load_params(model.flax_dir / PARAMS_DIR))[q]
    assert not np.allclose(np.asarray(got[q]), np.asarray(base))  # the factors were merged


def test_on_a_mesh_each_parameter_is_restored_into_its_shard(model, tmp_path):
    write_run(tmp_path / "run", model.flax_dir, trained_params(model.flax_dir), scan=True)
    mesh = make_mesh((2, 2, 2))
    loaded = load_model(tmp_path / "run", mesh=mesh, with_tokenizer=False, scan_layers="off")
    one = load_model(tmp_path / "run", with_tokenizer=False, scan_layers="off")
    from vlguard_jax.models import abstract_params

    target = traverse_util.flatten_dict(abstract_params(loaded.model, mesh))
    got = traverse_util.flatten_dict(loaded.params)
    for k, s in target.items():
        assert got[k].sharding.is_equivalent_to(s.sharding, len(s.shape)), "/".join(k)
    for k, v in traverse_util.flatten_dict(one.params).items():
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(v), rtol=1e-6, atol=1e-7, err_msg="/".join(k))


def test_the_optimizer_state_is_never_read(model, tmp_path, monkeypatch):
    write_run(tmp_path / "run", model.flax_dir, trained_params(model.flax_dir))
    read = []
    original = runs.read_params
    monkeypatch.setattr(runs, "read_params", lambda *a, **k: read.append(a) or original(*a, **k))
    monkeypatch.setattr(runs, "read_latest", lambda *a, **k: pytest.fail("the whole training state was read"))
    load_model(tmp_path / "run", with_tokenizer=False)
    assert len(read) == 1


@pytest.mark.slow
def test_loading_a_run_costs_what_loading_its_checkpoint_costs(tmp_path):
    """A ~50M-parameter full fine-tune with its Adam moments (three times its weights on disk):
    the peak memory of loading the run stays near that of loading the same weights converted."""
    tok = tiny.tokenizer()
    cfg = tiny.hf_config(tok, heads=8, kv_heads=8, text_layers=4)
    t = cfg.text_config
    t.hidden_size, t.intermediate_size, t.head_dim, t.vocab_size = 768, 2048, 96, 8192
    cfg.image_token_index = len(tok) - 1
    from benchmarks.conversion import write_checkpoint
    from vlguard_jax.conversion.hf_to_flax import convert

    total, _ = write_checkpoint(tmp_path / "hf", cfg, tok, shard_bytes=64 * MB)
    convert(tmp_path / "hf", tmp_path / "base", "float32")
    params = traverse_util.flatten_dict(load_params(tmp_path / "base" / PARAMS_DIR))
    trained = traverse_util.unflatten_dict({k: np.asarray(v) for k, v in params.items() if k[0] != "vision_tower"})
    write_run(tmp_path / "run", tmp_path / "base", trained, mode="full")
    del params, trained
    script = textwrap.dedent("""
        import json, sys
        from vlguard_jax.checkpoints.loading import load_model
        def status(key):
            return int(dict(l.split(":", 1) for l in open("/proc/self/status"))[key].split()[0]) * 1024
        load_model(sys.argv[2], with_tokenizer=False, scan_layers="off")  # every one-time initialisation
        open("/proc/self/clear_refs", "w").write("5")
        base = status("VmRSS")
        loaded = load_model(sys.argv[1], with_tokenizer=False, scan_layers="off")
        print(json.dumps({"base": base, "peak": status("VmHWM")}))
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "MALLOC_ARENA_MAX": "2"}
    growth, runs = {}, {}
    for what in ("base", "run"):  # the median of five processes: one load's growth is allocator noise
        for _ in range(5):
            out = subprocess.run(
                [sys.executable, "-c", script, str(tmp_path / what), str(tmp_path / "base")],
                capture_output=True,
                text=True,
                env=env,
                cwd=Path(__file__).resolve().parents[2],
            )
            assert out.returncode == 0, out.stderr[-3000:]
            r = json.loads(out.stdout.strip().splitlines()[-1])
            runs.setdefault(what, []).append(r["peak"] - r["base"])
        growth[what] = sorted(runs[what])[2]
    print(
        f"weights {total / MB:.0f} MB; peak growth (median of {[round(g / MB) for g in runs['base']]} and "
        f"{[round(g / MB) for g in runs['run']]}): checkpoint {growth['base'] / MB:.0f} MB, run {growth['run'] / MB:.0f} MB"
    )
    # Measured (medians of 3): checkpoint 185-209 MB, run 158 MB; reading the whole training state
    # and merging on the host cost 653 MB. Allocator noise moves single runs by up to 100 MB.
    assert growth["run"] <= growth["base"] + total / 2
    assert growth["run"] <= 1.6 * total
