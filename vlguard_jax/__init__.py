"""vlguard-jax: VLGuard safety fine-tuning of LLaVA-1.5 in JAX.

Public surface: `load_model`, `LlavaModel`, `LlavaConfig`, `make_mesh`.
"""

from vlguard_jax.io.loading import load_model
from vlguard_jax.models import LlavaConfig, LlavaModel
from vlguard_jax.sharding import make_mesh

__all__ = ["load_model", "LlavaModel", "LlavaConfig", "make_mesh"]
