"""vlguard-jax: VLGuard safety fine-tuning of LLaVA-1.5 in JAX.

Public surface: `load_model` and `make_mesh`, read on first use, so a command's `--help` and
`import vlguard_jax.errors` do not load jax, flax, orbax and transformers. Each model family's
config and module classes live in its own modules, which `vlguard_jax.families.FAMILIES` lists.
"""

import os
from typing import TYPE_CHECKING

from vlguard_jax import lazy

# transformers' import-time advice that PyTorch is absent: we never need torch (converters read
# safetensors), so a new user would read it as a fault. Set the variable to "" to see advice again.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

if TYPE_CHECKING:
    from vlguard_jax.checkpoints.loading import load_model
    from vlguard_jax.sharding import make_mesh

_SURFACE = {
    "load_model": "vlguard_jax.checkpoints.loading",
    "make_mesh": "vlguard_jax.sharding",
}
__all__ = ["load_model", "make_mesh"]

__getattr__ = lazy.surface(__name__, _SURFACE)
