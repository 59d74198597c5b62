"""The base training config that every file in `configs/` starts from (big_vision style): a
ConfigDict of `RunConfig()`'s defaults (train/config.py), so a misspelt override
(`--config.optim.lr_typo=1`) is an error."""

from __future__ import annotations

import ml_collections

from vlguard_jax.train.config import RunConfig


def base_config() -> ml_collections.ConfigDict:
    return RunConfig().to_config()
