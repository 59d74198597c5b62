"""The data settings are one typed, frozen table: its defaults are the config's, a key it does not
have is an error naming it, and it cannot be changed after the run starts."""

import dataclasses

import pytest

from vlguard_jax.data.config import DataConfig
from vlguard_jax.errors import ConfigError
from vlguard_jax.train.defaults import base_config


def test_the_config_block_is_built_from_the_typed_defaults():
    block = base_config().data
    assert DataConfig.from_config(block) == DataConfig()
    assert (DataConfig().recipe, DataConfig().max_length, DataConfig().helpful_samples) == ("posthoc", 2048, 5000)
    block.recipe, block.max_length = "mixed", 512
    assert DataConfig.from_config(block) == dataclasses.replace(DataConfig(), recipe="mixed", max_length=512)


def test_an_unknown_key_is_named_and_the_settings_are_frozen():
    with pytest.raises(ConfigError, match=r"config.data.max_lenght: not a data setting"):
        DataConfig.from_config({"max_lenght": 10})
    with pytest.raises(dataclasses.FrozenInstanceError):
        DataConfig().recipe = "mixed"  # type: ignore[misc]
