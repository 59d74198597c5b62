"""A checkpoint path is resolved once: `resolve_checkpoint` says whether it is a converted
checkpoint or a training run, reads its config once, its tokenizer at most once and only when
asked, and refuses what is not a checkpoint with one line naming the path."""

import json
import shutil

import numpy as np
import pytest

from tests import tiny
from vlguard_jax.checkpoints import ref as ref_module
from vlguard_jax.checkpoints import runs
from vlguard_jax.checkpoints.loading import load_model
from vlguard_jax.checkpoints.ref import CheckpointRef, resolve_checkpoint
from vlguard_jax.checkpoints.runs import RunError, RunMeta
from vlguard_jax.checkpoints.training import Checkpoints
from vlguard_jax.data import tokenization
from vlguard_jax.errors import InputError, MissingFileError, UserError
from vlguard_jax.families import LLAVA
from vlguard_jax.models.config import LoraSpec
from vlguard_jax.storage import files


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny.build(tmp_path_factory.mktemp("ref") / "model")


def write_run(workdir, base, steps=(2,)) -> None:
    """A training workdir whose checkpoints name `base`, written by the training writer."""
    ckpt = Checkpoints(workdir, every=1, keep=5)
    meta = RunMeta(str(base), "lora", LoraSpec(4, 8.0), scan_layers=False)
    for step in steps:
        ckpt.save(step, {"params": {"x": np.full(3, step, np.float32)}}, {"epoch": 0}, meta, force=True)
    ckpt.wait()
    ckpt.close()


def test_a_converted_checkpoint(model, monkeypatch):
    reads = []
    load = ref_module.load_tokenizer
    monkeypatch.setattr(ref_module, "load_tokenizer", lambda p: reads.append(p) or load(p))
    ref = resolve_checkpoint(str(model.flax_dir))
    assert (ref.kind, ref.path, ref.base, ref.family, ref.remote) == (
        "converted",
        model.flax_dir,
        model.flax_dir,
        LLAVA,
        False,
    )
    assert str(ref) == str(model.flax_dir)
    assert ref.config.text.vocab_size == model.cfg.text_config.vocab_size
    assert reads == []  # the tokenizer is read when first asked for
    assert ref.tokenizer is ref.tokenizer and len(reads) == 1
    assert ref.fingerprint == files.fingerprint(model.flax_dir)
    assert resolve_checkpoint(ref) is ref  # a ref passes through: nothing is probed again


def test_the_tokenizer_gives_the_families_authors_ids(model):
    """The tokenizer is set up by its family (data.tokenization): LLaVA's 4.31 rule, so text
    after `</s>` loses its first piece's `▁`, where the tokenizer as loaded keeps none."""
    ref = resolve_checkpoint(str(model.flax_dir))
    assert tokenization.rule_of(ref.tokenizer) == LLAVA.tokenization == "hf431"
    loaded = ref_module.load_tokenizer(model.flax_dir)
    assert tokenization.rule_of(loaded) is None
    assert tokenization.ids(ref.tokenizer, " a") != tokenization.ids(loaded, " a")  # SentencePiece keeps the space


def test_a_training_run_names_its_base(model, tmp_path):
    write_run(tmp_path / "run", model.flax_dir, steps=(2, 4))
    ref = resolve_checkpoint(tmp_path / "run")
    assert (ref.kind, ref.path, ref.base) == ("run", tmp_path / "run", model.flax_dir)
    assert ref.config == resolve_checkpoint(model.flax_dir).config  # the base's
    step_dir = tmp_path / "run" / "checkpoints" / "4"
    assert ref.step == 4
    assert ref.fingerprint == f"{files.fingerprint(model.flax_dir)}+4:{files.fingerprint(step_dir)}"
    # The step is listed once: a checkpoint the run finishes later is not this ref's.
    write_run(tmp_path / "run", model.flax_dir, steps=(6,))
    assert ref.step == 4 and resolve_checkpoint(tmp_path / "run").step == 6
    with pytest.raises(ValueError, match="has no steps"):
        _ = resolve_checkpoint(model.flax_dir).step


def test_a_run_whose_base_was_replaced_is_refused_everywhere(tmp_path, capsys):
    """run.json records the base's fingerprint: after the base is re-converted in place, reading
    the run (evaluate, generate, every export) is refused, naming both fingerprints."""
    built = tiny.build(tmp_path / "model")
    write_run(tmp_path / "run", built.flax_dir)
    (tmp_path / "run" / "run.json").write_text(json.dumps({"base_checkpoint": files.fingerprint(built.flax_dir)}))
    assert resolve_checkpoint(tmp_path / "run").base == built.flax_dir
    other = tiny.build(tmp_path / "other", seed=1)
    shutil.rmtree(built.flax_dir)
    shutil.copytree(other.flax_dir, built.flax_dir)  # converted again over the same path: other weights
    with pytest.raises(RunError, match=r"run: its base checkpoint .* is not the one the run trained on"):
        resolve_checkpoint(tmp_path / "run")
    with pytest.raises(RunError, match="re-converted or replaced"):
        runs.load_run(tmp_path / "run")  # what flax-to-hf and flax-to-minigptv2 read
    from vlguard_jax.conversion.__main__ import main

    argv = ["flax-to-hf", "--src", str(tmp_path / "run"), "--dst", str(tmp_path / "peft"), "--lora", "peft"]
    assert main(argv) == 1
    assert "is not the one the run trained on" in capsys.readouterr().err and not (tmp_path / "peft").exists()


def test_load_model_reads_the_refs_config_and_tokenizer(model, monkeypatch):
    ref = resolve_checkpoint(model.flax_dir)
    monkeypatch.setattr(ref_module, "load_config", lambda *a: pytest.fail("config read again"))
    loaded = load_model(ref)
    assert loaded.config is ref.config and loaded.tokenizer is ref.tokenizer


def test_what_is_not_a_checkpoint_is_one_line_naming_it(model, tmp_path):
    with pytest.raises(MissingFileError, match=f"{tmp_path / 'nothing'}: no model_config.json"):
        resolve_checkpoint(tmp_path / "nothing")
    write_run(tmp_path / "orphan", tmp_path / "gone")
    with pytest.raises(RunError, match=f"its base checkpoint {tmp_path / 'gone'} is missing"):
        resolve_checkpoint(tmp_path / "orphan")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(RunError, match="no finished training checkpoint"):
        resolve_checkpoint(tmp_path / "empty")
    assert issubclass(RunError, UserError) and isinstance(resolve_checkpoint(model.flax_dir), CheckpointRef)


def test_a_text_only_llama_is_its_own_family_and_does_not_scan(tmp_path):
    judge = resolve_checkpoint(tiny.build_llama(tmp_path / "guard").flax_dir)
    assert (judge.kind, judge.family.name, judge.family.scannable) == ("converted", "llama", False)
    assert not load_model(judge, scan_layers="auto").model.scan_layers
    with pytest.raises(InputError, match="a text-only Llama checkpoint; its decoder layers do not run scanned"):
        load_model(judge, scan_layers="on")
