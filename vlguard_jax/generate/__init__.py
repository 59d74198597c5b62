"""Batched generation: `Generator`, `Sampling`, `load_generator` and prompt building; CLI in
`__main__`. The names load on first use (PEP 562), so the command's `--help` loads no jax."""

from typing import TYPE_CHECKING

from vlguard_jax import lazy

if TYPE_CHECKING:
    from vlguard_jax.generate.loader import load_generator, weight_bytes
    from vlguard_jax.generate.prompts import prompt_ids, prompt_text, response_text
    from vlguard_jax.generate.sampler import Generator, Sampling
    from vlguard_jax.runtime import auto_dtype

_SURFACE = {
    "Generator": "vlguard_jax.generate.sampler",
    "Sampling": "vlguard_jax.generate.sampler",
    "auto_dtype": "vlguard_jax.runtime",
    "prompt_ids": "vlguard_jax.generate.prompts",
    "prompt_text": "vlguard_jax.generate.prompts",
    "response_text": "vlguard_jax.generate.prompts",
    "load_generator": "vlguard_jax.generate.loader",
    "weight_bytes": "vlguard_jax.generate.loader",
}
__all__ = [
    "Generator",
    "Sampling",
    "auto_dtype",
    "prompt_ids",
    "prompt_text",
    "response_text",
    "load_generator",
    "weight_bytes",
]

__getattr__ = lazy.surface(__name__, _SURFACE)
