"""A run's settings are one typed, frozen tree: RunConfig's defaults are the command line's, the
ConfigDict a config file gives turns into it once (enums, tuples and floats as their types), a key
no block has is an error naming it, and the demo's own block is left to the demo."""

import dataclasses

import pytest

from configs import demo, paper
from vlguard_jax.data.config import DataConfig
from vlguard_jax.errors import ConfigError
from vlguard_jax.models.config import ScanLayers
from vlguard_jax.train.config import LoraConfig, RunConfig
from vlguard_jax.train.defaults import base_config


def test_the_command_lines_defaults_are_the_typed_ones():
    assert RunConfig.from_config(base_config()) == RunConfig()
    assert RunConfig().to_config().to_dict() == base_config().to_dict()
    assert base_config().model.scan_layers == "auto" and RunConfig().model.scan_layers is ScanLayers.AUTO


def test_values_take_their_fields_types():
    c = base_config()
    c.model.scan_layers, c.optim.lr, c.lora.targets, c.mesh.shape = "on", 1, ["q_proj"], [2, -1, 1]
    r = RunConfig.from_config(c)
    assert r.model.scan_layers is ScanLayers.ON
    assert r.optim.lr == 1.0 and isinstance(r.optim.lr, float)
    assert r.lora.targets == ("q_proj",) and r.mesh.shape == (2, -1, 1)
    assert isinstance(r.data, DataConfig) and r.accum == 128 // 16
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.seed = 1  # type: ignore[misc]


def test_lora_spec_only_for_lora_runs():
    c = base_config()
    c.lora.rank, c.lora.alpha = 4, 8.0
    spec = RunConfig.from_config(c).lora_spec
    assert spec is not None and (spec.rank, spec.alpha, spec.scale) == (4, 8.0, 2.0)
    c.train.mode = "full"
    assert RunConfig.from_config(c).lora_spec is None
    assert LoraConfig().spec().targets == RunConfig().lora.targets


def test_an_unknown_key_is_named_with_its_block():
    with pytest.raises(ConfigError, match=r"config\.optim\.lr_typo: no such setting; those of config\.optim are"):
        RunConfig.from_config({"optim": {"lr_typo": 1.0}})
    with pytest.raises(ConfigError, match=r"config\.seeed: no such setting; those of config are"):
        RunConfig.from_config({"seeed": 1})
    with pytest.raises(ConfigError, match=r"scan_layers must be one of"):
        RunConfig.from_config({"model": {"scan_layers": "sometimes"}})


def test_a_config_files_own_block_is_left_to_its_command():
    c = demo.get_config()
    r = RunConfig.from_config(c)  # the `demo` block is the demo's, not the run's
    assert (r.total_steps, r.lora.rank, r.data.helpful_samples) == (500, 32, 8)
    assert c.demo.stage1_steps == 250


def test_the_paper_configs_are_typed_blocks_over_the_defaults():
    r = RunConfig.from_config(paper.get_config("13b,full,mixed"))
    expected = dataclasses.replace(
        RunConfig(),
        epochs=1,
        micro_batch=8,
        model=dataclasses.replace(RunConfig().model, checkpoint="checkpoints/llava-1.5-13b-pretrain-flax"),
        train=dataclasses.replace(RunConfig().train, mode="full"),
        optim=dataclasses.replace(RunConfig().optim, lr=2e-5, projector_lr=2e-5),
        data=dataclasses.replace(RunConfig().data, recipe="mixed", template="vicuna_v1", on_bad_record="skip"),
    )
    assert r == expected
