"""LLaVA-1.5: CLIP tower -> mlp2x_gelu projector -> Llama, with image features scattered into the
token sequence at the positions of `image_token_index` (the llava-hf input convention).

One image per row. A row with image tokens takes the k-th feature of its own image at its k-th
image token; a row with none (text-only samples in a mixed batch) ignores its pixel slot. Shapes
stay static under `jit`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlguard_jax.models.clip import CLIPVisionTower
from vlguard_jax.models.config import LoraSpec
from vlguard_jax.models.layers import Dense, Dtype
from vlguard_jax.models.llama import LlamaForCausalLM, prompt_positions
from vlguard_jax.models.llava_config import LlavaConfig
from vlguard_jax.sharding import constrain


class Projector(nn.Module):
    """mlp2x_gelu: Linear, exact GELU, Linear."""

    config: LlavaConfig
    dtype: Dtype
    param_dtype: Dtype

    @nn.compact
    def __call__(self, x):
        c = self.config
        kw: dict[str, Any] = dict(use_bias=c.projector_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        x = Dense(c.text.hidden_size, ("vision_embed", "mlp"), name="linear_1", **kw)(x)
        x = jax.nn.gelu(x, approximate=False)
        return Dense(c.text.hidden_size, ("mlp", "embed"), name="linear_2", **kw)(x)


def scatter_image_features(embeds, input_ids, features, image_token_index) -> jax.Array:
    """Put features[b, k] at the k-th image token of row b. embeds [B,T,D], features [B,P,D]."""
    is_image = input_ids == image_token_index
    k = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, features.shape[1] - 1)
    gathered = jnp.take_along_axis(features.astype(embeds.dtype), k[..., None], axis=1)
    return jnp.where(is_image[..., None], gathered, embeds)


class ImageTextModel(nn.Module):
    """A vision side whose features, projected to the Llama's width, replace the Llama's input
    embeddings at the image tokens: LLaVA here, MiniGPT-v2 in `minigptv2`. A subclass builds its
    tower and projection in `setup_image_side` and says how `image_features` runs them."""

    config: Any  # the family's config: `.text`, `.image_token_index`
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attn_impl: str | None = None
    remat_policy: str = "none"
    lora: LoraSpec | None = None  # on the language model only; the vision side is frozen
    scan_layers: bool = False

    def setup(self) -> None:
        kw: dict[str, Any] = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.setup_image_side(kw)
        self.language_model = LlamaForCausalLM(
            self.config.text,
            attn_impl=self.attn_impl,
            remat_policy=self.remat_policy,
            lora=self.lora,
            scan_layers=self.scan_layers,
            **kw,
        )

    def setup_image_side(self, kw: dict[str, Any]) -> None:
        raise NotImplementedError

    def image_features(self, pixel_values) -> jax.Array:
        """[B, C, H, W] -> projected features [B, num_image_tokens, text hidden]."""
        raise NotImplementedError

    def embed(self, input_ids) -> jax.Array:
        return self.language_model.embed(input_ids)

    def prompt_positions(self, ids, mask, pixels=None) -> tuple[jax.Array, jax.Array]:
        """The positions a prompt batch is prefilled at, and each row's next one (the sampler's
        decode goes on from it): 1D RoPE over the real tokens (`llama.prompt_positions`)."""
        return prompt_positions(mask)

    def example_inputs(self, batch: int = 1) -> tuple[jax.Array, Any]:
        """(ids [batch, 1 + image tokens], zero pixels [batch, C, H, W]): inputs that touch every
        parameter, for `init` and shape tracing."""
        c, v = self.config, self.config.vision
        ids = jnp.concatenate(
            [jnp.ones((batch, 1), jnp.int32), jnp.full((batch, c.num_image_tokens), c.image_token_index, jnp.int32)],
            axis=1,
        )
        return ids, jnp.zeros((batch, v.num_channels, v.image_size, v.image_size), jnp.float32)

    def __call__(
        self, input_ids, pixel_values=None, attention_mask=None, positions=None, cache=None, return_hidden: bool = False
    ):
        """Returns (logits or final hidden states, cache). `attention_mask` [B, T] marks real
        tokens; leave it None for right-padded training batches (causal masking is then exact)."""
        x = self.embed(input_ids)
        if pixel_values is not None:
            feats = self.image_features(pixel_values)
            x = scatter_image_features(x, input_ids, feats, self.config.image_token_index)
        h, cache = self.language_model(x, positions, attention_mask, cache)
        return (h if return_hidden else self.language_model.logits(h)), cache

    def logits(self, hidden) -> jax.Array:
        return self.language_model.logits(hidden)


class LlavaModel(ImageTextModel):
    """CLIP's patch features (the selected layer, CLS dropped by "default") -> mlp2x_gelu."""

    config: LlavaConfig

    def setup_image_side(self, kw: dict[str, Any]) -> None:
        c = self.config
        self.vision_tower = CLIPVisionTower(
            c.vision, num_layers=c.num_vision_layers_used, attn_impl=self.attn_impl, **kw
        )
        self.projector = Projector(c, **kw)

    def image_features(self, pixel_values) -> jax.Array:
        h = self.vision_tower(pixel_values)
        if self.config.vision_feature_select_strategy == "default":
            h = h[:, 1:]
        return constrain(self.projector(h), ("batch", "length", "act_embed"))
