"""Training: `python -m vlguard_jax.train --config configs/NAME.py`; in code, the public API below.

- `run(config)`: a whole run (config: a `RunConfig` or a config file's ConfigDict).
- The pieces a run is made of, for benchmarks and custom loops: `build_params` (the base model,
  LoRA added, split into trainable and frozen weights), `optimizer`, `init_state` (the sharded
  `TrainState`), `jit_train_step` (the donated, jitted step), `global_batch` and `label_budget`
  (a batch as the step takes it).

The names load on first use (PEP 562), so the command's `--help` and a config file load no jax.
"""

from typing import TYPE_CHECKING

from vlguard_jax import lazy

if TYPE_CHECKING:
    from vlguard_jax.train.config import RunConfig
    from vlguard_jax.train.defaults import base_config
    from vlguard_jax.train.loop import Start, build_params, run
    from vlguard_jax.train.state import (
        TrainState,
        abstract_state,
        cast_tree,
        global_batch,
        init_state,
        optimizer,
        partition,
        state_shardings,
    )
    from vlguard_jax.train.step import jit_train_step, label_budget

_SURFACE = {
    "RunConfig": "vlguard_jax.train.config",
    "base_config": "vlguard_jax.train.defaults",
    "Start": "vlguard_jax.train.loop",
    "build_params": "vlguard_jax.train.loop",
    "run": "vlguard_jax.train.loop",
    "TrainState": "vlguard_jax.train.state",
    "abstract_state": "vlguard_jax.train.state",
    "cast_tree": "vlguard_jax.train.state",
    "global_batch": "vlguard_jax.train.state",
    "init_state": "vlguard_jax.train.state",
    "optimizer": "vlguard_jax.train.state",
    "partition": "vlguard_jax.train.state",
    "state_shardings": "vlguard_jax.train.state",
    "jit_train_step": "vlguard_jax.train.step",
    "label_budget": "vlguard_jax.train.step",
}
__all__ = [
    "RunConfig",
    "Start",
    "TrainState",
    "abstract_state",
    "base_config",
    "build_params",
    "cast_tree",
    "global_batch",
    "init_state",
    "jit_train_step",
    "label_budget",
    "optimizer",
    "partition",
    "run",
    "state_shardings",
]

__getattr__ = lazy.surface(__name__, _SURFACE)
