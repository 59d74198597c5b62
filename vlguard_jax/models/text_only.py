"""A text-only Llama (such as Llama Guard) behind `LlavaModel`'s interface, so the generator,
loader and converters serve it unchanged. Its parameters are `language_model/...`, as in LLaVA."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlguard_jax.models.layers import Dtype
from vlguard_jax.models.llama import LlamaForCausalLM, prompt_positions
from vlguard_jax.models.text_only_config import TextOnlyConfig


class TextOnlyModel(nn.Module):
    config: TextOnlyConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attn_impl: str | None = None
    remat_policy: str = "none"
    scan_layers: bool = False  # always per layer (its family is not scannable); LlavaModel's interface

    def setup(self) -> None:
        self.language_model = LlamaForCausalLM(
            self.config.text,
            attn_impl=self.attn_impl,
            remat_policy=self.remat_policy,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

    def __call__(
        self, input_ids, pixel_values=None, attention_mask=None, positions=None, cache=None, return_hidden: bool = False
    ):
        if pixel_values is not None:
            raise ValueError("a text-only model takes no images")
        x = self.language_model.embed(input_ids)
        h, cache = self.language_model(x, positions, attention_mask, cache)
        return (h if return_hidden else self.language_model.logits(h)), cache

    def prompt_positions(self, ids, mask, pixels=None) -> tuple[jax.Array, jax.Array]:
        """The positions a prompt batch is prefilled at, and each row's next one (the sampler's
        decode goes on from it): 1D RoPE over the real tokens (`llama.prompt_positions`)."""
        return prompt_positions(mask)

    def example_inputs(self, batch: int = 1) -> tuple[jax.Array, None]:
        """(ids [batch, 2], no pixels): inputs that touch every parameter (`init`, shape tracing)."""
        return jnp.ones((batch, 2), jnp.int32), None

    def logits(self, hidden) -> jax.Array:
        return self.language_model.logits(hidden)
