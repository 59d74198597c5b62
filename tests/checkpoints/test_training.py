"""Training checkpoints hold a TrainState under the names the state dict had (step, params, opt,
rng), so a workdir written before TrainState resumes into it unchanged."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from vlguard_jax import sharding
from vlguard_jax.checkpoints.runs import RunMeta
from vlguard_jax.checkpoints.training import Checkpoints, CheckpointWriteError
from vlguard_jax.models.config import LoraSpec
from vlguard_jax.train.state import TrainState, abstract_state, init_state


def test_a_checkpoint_saved_as_a_dict_restores_as_a_train_state(tmp_path):
    mesh = sharding.make_mesh((1, 1, 1))
    trainable = {"projector": {"kernel": jnp.arange(6.0).reshape(2, 3)}, "lora_a": jnp.ones((3,))}
    opt = optax.adamw(1e-3)
    state, shardings = init_state(opt, trainable, mesh, seed=3)
    state = dataclasses.replace(state, step=jnp.int32(7), params=jax.tree.map(lambda x: x + 1, state.params))
    old = Checkpoints(tmp_path, every=1, keep=2)
    meta = RunMeta("/ck/base", "lora", LoraSpec(4, 8.0, 0.05, ("q_proj", "v_proj")), scan_layers=True)
    old.save(7, {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}, {"pos": 7}, meta, force=True)
    old.wait()
    old.close()
    ckpt = Checkpoints(tmp_path, every=1, keep=2)
    restored, data, restored_meta = ckpt.restore(7, abstract_state(opt, trainable, shardings))
    assert ckpt.saved_stacked(7)  # read from the typed meta alone
    ckpt.close()
    assert isinstance(restored, TrainState) and (data, restored_meta) == ({"pos": 7}, meta)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_run_meta_reads_the_dicts_older_checkpoints_wrote():
    """Checkpoints written before RunMeta hold `cfg.lora.to_dict()` and no family; they read as
    LLaVA runs with the same LoRA (and its scale, alpha / rank, the one every export uses)."""
    old = {
        "base_checkpoint": "/ck/base",
        "mode": "lora",
        "scan_layers": False,
        "lora": {"rank": 4, "alpha": 8.0, "dropout": 0.05, "targets": ["q_proj", "v_proj"]},
        "config": "{}",
    }
    meta = RunMeta.from_dict(old)
    assert meta == RunMeta("/ck/base", "lora", LoraSpec(4, 8.0, 0.05, ("q_proj", "v_proj")), False, "llava", "{}")
    assert meta.lora is not None and meta.lora.scale == 2.0
    assert RunMeta.from_dict(meta.to_dict()) == meta and meta.to_dict() == dict(old, family="llava")
    full = RunMeta.from_dict({"base_checkpoint": "/ck/base", "mode": "full", "lora": None})
    assert full.lora is None and full.mode == "full" and not full.scan_layers


class StoreFailed:
    """An orbax write future whose store failed under it (what a bucket that stops answering gives)."""

    def result(self, timeout=None):
        raise OSError("PUT checkpoints/2/data/metadata: 503 Service Unavailable")


def failing_at(step: int, monkeypatch) -> None:
    """The write of checkpoint `step` fails in the background, as a store's would; none of its
    items is written, so no writer is left behind in this process."""
    original = ocp.CompositeCheckpointHandler.async_save

    async def async_save(self, directory, *a, **k):
        if str(directory.name).split(".")[0] == str(step):
            return [StoreFailed()]
        return await original(self, directory, *a, **k)

    monkeypatch.setattr(ocp.CompositeCheckpointHandler, "async_save", async_save)


def test_a_failed_write_is_one_error_naming_the_step_and_a_resume_goes_past_it(tmp_path, monkeypatch):
    failing_at(2, monkeypatch)
    meta = RunMeta("/ck/base", "full", None, scan_layers=False)
    state = {"params": {"x": np.ones(3, np.float32)}}
    ckpt = Checkpoints(tmp_path, every=1, keep=5)
    assert ckpt.save(1, state, {"pos": 1}, meta) and ckpt.save(2, state, {"pos": 2}, meta)
    with pytest.raises(CheckpointWriteError) as e:
        ckpt.wait()
    assert str(e.value).startswith(f"{tmp_path / 'checkpoints' / '2'}: the checkpoint of step 2 could not be written")
    assert "503 Service Unavailable" in str(e.value) and "The last complete checkpoint is step 1" in str(e.value)
    with pytest.raises(CheckpointWriteError):
        ckpt.save(3, state, {"pos": 3}, meta)  # nothing more is written after a lost one
    ckpt.close()  # the failed write's error is not raised again
    monkeypatch.undo()
    again = Checkpoints(tmp_path, every=1, keep=5)  # a rerun: the partial step is not a checkpoint
    assert again.latest() == 1
    assert again.save(2, state, {"pos": 2}, meta)
    again.wait()
    assert again.latest() == 2
    again.close()
