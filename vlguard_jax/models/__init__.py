"""Flax ports of LLaVA-1.5 (CLIP tower, projector, Llama decoder), MiniGPT-v2 and a text-only
Llama, as model families (`family.py`). The names below load on first use (PEP 562), so reading a
model config or a command's `--help` loads no flax."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlguard_jax.models.config import LlavaConfig, TextConfig, TextOnlyConfig, VisionConfig
    from vlguard_jax.models.family import FAMILIES, LLAMA, LLAVA, Family, family_of, load_config
    from vlguard_jax.models.llama import init_cache
    from vlguard_jax.models.llava import LlavaModel
    from vlguard_jax.models.params import abstract_params, build_model, dummy_inputs, init_params, param_axes
    from vlguard_jax.models.text_only import TextOnlyModel

_SURFACE = {
    "LlavaConfig": "vlguard_jax.models.config",
    "TextConfig": "vlguard_jax.models.config",
    "TextOnlyConfig": "vlguard_jax.models.config",
    "VisionConfig": "vlguard_jax.models.config",
    "LlavaModel": "vlguard_jax.models.llava",
    "TextOnlyModel": "vlguard_jax.models.text_only",
    "Family": "vlguard_jax.models.family",
    "FAMILIES": "vlguard_jax.models.family",
    "LLAVA": "vlguard_jax.models.family",
    "LLAMA": "vlguard_jax.models.family",
    "family_of": "vlguard_jax.models.family",
    "build_model": "vlguard_jax.models.params",
    "load_config": "vlguard_jax.models.family",
    "init_cache": "vlguard_jax.models.llama",
    "dummy_inputs": "vlguard_jax.models.params",
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
    "Family",
    "FAMILIES",
    "LLAVA",
    "LLAMA",
    "family_of",
    "build_model",
    "load_config",
    "init_cache",
    "dummy_inputs",
    "param_axes",
    "abstract_params",
    "init_params",
]


def __getattr__(name: str) -> Any:
    if name not in _SURFACE:
        raise AttributeError(f"module 'vlguard_jax.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_SURFACE[name]), name)
