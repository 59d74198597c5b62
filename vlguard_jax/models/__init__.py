"""Flax ports of LLaVA-1.5 (CLIP tower, projector, Llama decoder), MiniGPT-v2 and a text-only
Llama: the modules that model families (`vlguard_jax.families`) build. The names below load on
first use (PEP 562), so reading a model config or a command's `--help` loads no flax."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlguard_jax import lazy

if TYPE_CHECKING:
    from vlguard_jax.models.config import LlavaConfig, TextConfig, TextOnlyConfig, VisionConfig
    from vlguard_jax.models.llama import init_cache
    from vlguard_jax.models.llava import LlavaModel
    from vlguard_jax.models.params import abstract_params, init_params, param_axes
    from vlguard_jax.models.text_only import TextOnlyModel

_SURFACE = {
    "LlavaConfig": "vlguard_jax.models.config",
    "TextConfig": "vlguard_jax.models.config",
    "TextOnlyConfig": "vlguard_jax.models.config",
    "VisionConfig": "vlguard_jax.models.config",
    "LlavaModel": "vlguard_jax.models.llava",
    "TextOnlyModel": "vlguard_jax.models.text_only",
    "init_cache": "vlguard_jax.models.llama",
    "param_axes": "vlguard_jax.models.params",
    "abstract_params": "vlguard_jax.models.params",
    "init_params": "vlguard_jax.models.params",
}
__all__ = [
    "LlavaConfig",
    "TextConfig",
    "TextOnlyConfig",
    "VisionConfig",
    "LlavaModel",
    "TextOnlyModel",
    "init_cache",
    "param_axes",
    "abstract_params",
    "init_params",
]

__getattr__ = lazy.surface(__name__, _SURFACE)
