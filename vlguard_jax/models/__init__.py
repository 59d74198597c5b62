"""Flax ports of LLaVA-1.5 (CLIP tower, projector, Llama decoder), MiniGPT-v2, Qwen2.5-VL and a
text-only Llama: the modules that model families (`vlguard_jax.families`) build, each in its own
module. Below, what every family shares; the names load on first use (PEP 562), so reading a
model config or a command's `--help` loads no flax."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlguard_jax import lazy

if TYPE_CHECKING:
    from vlguard_jax.models.config import TextConfig, VisionConfig
    from vlguard_jax.models.llama import init_cache
    from vlguard_jax.models.params import abstract_params, init_params, param_axes

_SURFACE = {
    "TextConfig": "vlguard_jax.models.config",
    "VisionConfig": "vlguard_jax.models.config",
    "init_cache": "vlguard_jax.models.llama",
    "param_axes": "vlguard_jax.models.params",
    "abstract_params": "vlguard_jax.models.params",
    "init_params": "vlguard_jax.models.params",
}
__all__ = [
    "TextConfig",
    "VisionConfig",
    "init_cache",
    "param_axes",
    "abstract_params",
    "init_params",
]

__getattr__ = lazy.surface(__name__, _SURFACE)
