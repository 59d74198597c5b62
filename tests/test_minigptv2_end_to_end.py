"""MiniGPT-v2 through every command on tiny parts: the authors' three files converted with their
LoRA kept, VLGuard post-hoc LoRA training from those factors (MiniGPT-v2's template, image
transform and stage-3 schedule), an evaluation of the run on VLGuard rows, and the run exported
back to the authors' stage-3 format."""

import dataclasses
import json

import jax
import numpy as np
import pytest
import torch

from tests import tiny
from tests.minigptv2_reference import write_parts
from tests.train.minigptv2 import config
from vlguard_jax.checkpoints.runs import read_latest
from vlguard_jax.conversion.flax_to_minigptv2 import export
from vlguard_jax.conversion.minigptv2 import convert
from vlguard_jax.data.sample import write_sample
from vlguard_jax.errors import ConfigError, InputError
from vlguard_jax.evaluate.report import write_report
from vlguard_jax.evaluate.runner import Evaluation, Protocol, run
from vlguard_jax.train.loop import run as train

pytestmark = pytest.mark.slow
FACTOR = "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


def test_convert_train_evaluate_export(tmp_path):
    parts = write_parts(tmp_path / "parts")
    ck = tmp_path / "ck"
    convert(parts.llm, parts.eva, parts.ckpt, ck, dtype="float32", log=lambda _: None)
    sample = write_sample(tmp_path / "sample", n_train=8, n_test=8, n_helpful=8)
    with pytest.raises(ConfigError, match=r"config.data.template: 'vicuna_v1' does not train a MiniGPT-v2"):
        train(config(ck, sample, tmp_path / "wrong", template="vicuna_v1"), log_fn=lambda _: None)
    mismatched = config(ck, sample, tmp_path / "wrong")
    mismatched.lora.rank = 32
    with pytest.raises(ConfigError, match=r"config.lora: rank 32"):
        train(mismatched, log_fn=lambda _: None)
    missing = config(ck, sample, tmp_path / "wrong", vlguard_images=str(tmp_path / "missing.zip"))
    with pytest.raises(InputError, match=r"missing.zip: no such zip archive"):
        train(missing, log_fn=lambda _: None)
    assert not (tmp_path / "wrong").exists()  # a refused fresh run leaves no workdir (no run.json)

    out = train(config(ck, sample, tmp_path / "run"), log_fn=lambda _: None)
    assert out["step"] == 2 and np.isfinite(out["loss"])
    _, state, meta = read_latest(tmp_path / "run")
    assert meta.family == "minigptv2" and (meta.lora.rank, meta.lora.targets) == (64, ("q_proj", "v_proj"))
    trained = state["params"]["language_model"]["layers_0"]["self_attn"]["q_proj"]["lora_b"]
    original = torch.load(parts.ckpt, weights_only=True)["model"][FACTOR].numpy()
    assert not np.allclose(trained, original.T)  # trained from the authors' factors, and moved
    assert set(state["params"]) == {"llama_proj", "language_model"}  # the tower and ln_vision stayed frozen
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["lr"] == pytest.approx(1e-4)  # the stage-3 warmup's first step

    e = Evaluation(
        str(tmp_path / "run"),
        "vlguard",
        tmp_path / "eval",
        subset="unsafes",
        meta=sample["test"],
        images=sample["images"],
        limit=2,
        protocol=Protocol(max_new_tokens=4, batch_size=2, dtype="float32"),
    )
    result = run(e, log=lambda *_: None)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())["vlguard/unsafes"]
    assert result["n"] == 2 and summary["protocol"]["template"] == "minigptv2"
    # The report puts the MiniGPT-v2 rows beside a LLaVA's.
    llava = tiny.build(tmp_path / "llava")
    run(dataclasses.replace(e, checkpoint=str(llava.flax_dir), out=tmp_path / "eval_llava"), log=lambda *_: None)
    names = ["LLaVA (tiny)", "MiniGPT-v2 + VLGuard"]
    md, png = write_report([tmp_path / "eval_llava", tmp_path / "eval"], tmp_path / "report", names)
    table = md.read_text()
    assert all(n in table for n in names) and png.stat().st_size > 0

    sd = export(tmp_path / "run", tmp_path / "vlguard_minigptv2.pth")
    np.testing.assert_array_equal(sd[FACTOR], np.asarray(trained).T)
    written = torch.load(tmp_path / "vlguard_minigptv2.pth", weights_only=True)["model"]
    assert torch.equal(written[FACTOR], torch.from_numpy(np.asarray(trained).T.copy()))


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    """A MiniGPT-v2 run cut after its first checkpoint and rerun ends bit-identical to one that
    ran through: the state (kept factors, llama_proj, Adam moments), the data position and the
    rng resume as for LLaVA."""
    import shutil

    parts = write_parts(tmp_path / "parts")
    ck = tmp_path / "ck"
    convert(parts.llm, parts.eva, parts.ckpt, ck, dtype="float32", log=lambda _: None)
    sample = write_sample(tmp_path / "sample", n_train=8, n_test=8, n_helpful=8)
    cfgs = {}
    for name in ("through", "resumed"):
        c = config(ck, sample, tmp_path / name)
        c.total_steps, c.checkpoint_every, c.keep_checkpoints, c.lora.dropout = 3, 1, 3, 0.05
        cfgs[name] = c
        train(c, log_fn=lambda _: None)
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "3")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "2")
    said = []
    train(cfgs["resumed"], log_fn=said.append)
    assert any("resumed from" in s and "at step 1" in s for s in said)
    a, b = read_latest(tmp_path / "through")[1], read_latest(tmp_path / "resumed")[1]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
