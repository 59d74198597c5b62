"""vlguard-jax: VLGuard safety fine-tuning of LLaVA-1.5 in JAX.

Public surface: `load_model`, `LlavaModel`, `LlavaConfig`, `make_mesh`.
"""

import os

# transformers' import-time advice that PyTorch is absent: we never need torch (converters read
# safetensors), so a new user would read it as a fault. Set the variable to "" to see advice again.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from vlguard_jax.checkpoints.loading import load_model
from vlguard_jax.models import LlavaConfig, LlavaModel
from vlguard_jax.sharding import make_mesh

__all__ = ["load_model", "LlavaModel", "LlavaConfig", "make_mesh"]
