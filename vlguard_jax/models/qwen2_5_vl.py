"""Qwen2.5-VL (transformers' `Qwen2_5_VLForConditionalGeneration`): the vision tower of
`qwen_vision` whose merged tokens replace the `<|image_pad|>` embeddings, and a Qwen2 decoder
(the Llama decoder with biases on q, k, v) under multimodal RoPE.

Positions (`rope_index`, transformers' `get_rope_index`): three streams (temporal, height,
width). Text counts up on all three; an image's k-th token, in a grid of h x w merged tokens,
starting at position s, takes (s, s + k // w, s + k % w); text after it goes on from
s + max(h, w). Generation continues each row from its largest position + 1 (transformers'
`rope_deltas`), equal on every stream. One image per row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from vlguard_jax.errors import CheckpointError
from vlguard_jax.models.config import TextConfig, text_from_dict, text_to_dict
from vlguard_jax.models.llava import ImageTextModel
from vlguard_jax.models.qwen_vision import PatchMerger, QwenVisionConfig, QwenVisionTower
from vlguard_jax.sharding import constrain
from vlguard_jax.storage.files import atomic_write_json

# Qwen2.5-VL-7B-Instruct's decoder (its config.json): the default.
TEXT_7B = TextConfig(
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    head_dim=128,
    rms_norm_eps=1e-6,
    rope_theta=1e6,
    max_position_embeddings=128000,
    qkv_bias=True,
    bos_token_id=None,
    eos_token_id=151645,
    mrope_section=(16, 24, 24),
)
MIN_PIXELS = 56 * 56  # the processor's defaults (`Qwen2VLImageProcessor`)
MAX_PIXELS = 28 * 28 * 1280


@dataclasses.dataclass(frozen=True)
class Qwen2_5_VLConfig:
    """The model and its image processor's settings (from `preprocessor_config.json`)."""

    vision: QwenVisionConfig = QwenVisionConfig()
    text: TextConfig = TEXT_7B
    image_token_index: int = 151655  # <|image_pad|>
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
    architecture = "qwen2_5_vl"

    def __post_init__(self):
        t, v = self.text, self.vision
        if t.hidden_act != "silu" or v.hidden_act != "silu":
            raise CheckpointError(
                f"hidden_act {t.hidden_act!r}/{v.hidden_act!r} is not supported (Qwen2.5-VL uses silu)"
            )
        if not t.mrope_section or 2 * sum(t.mrope_section) != t.head_dim:
            raise CheckpointError(f"mrope_section {t.mrope_section} does not split head_dim {t.head_dim} in half")
        if v.out_hidden_size != t.hidden_size:
            raise CheckpointError(f"the merger's width {v.out_hidden_size} is not the decoder's {t.hidden_size}")
        if not 0 < self.min_pixels <= self.max_pixels:
            raise CheckpointError(f"min_pixels {self.min_pixels} and max_pixels {self.max_pixels} are not a range")

    @property
    def factor(self) -> int:
        """Image sides are multiples of this (28 px: a merged token's side)."""
        return self.vision.patch_size * self.vision.spatial_merge_size

    def image_flops(self, slots: int = 0) -> tuple[float, int, int]:
        """(forward FLOPs of one image of `slots` patch slots through the tower, the merger's
        weights, its merged tokens), for MFU: the padding is computed, so it counts."""
        v = self.vision
        unit = v.merge_unit * v.hidden_size
        return v.forward_flops(slots), unit * unit + unit * v.out_hidden_size, slots // v.merge_unit

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return dict(
            d,
            architecture=self.architecture,
            vision=dict(d["vision"], fullatt_block_indexes=list(self.vision.fullatt_block_indexes)),
            text=text_to_dict(self.text),
            image_mean=list(self.image_mean),
            image_std=list(self.image_std),
        )

    @classmethod
    def from_dict(cls, d: dict) -> Qwen2_5_VLConfig:
        d = {k: v for k, v in d.items() if k != "architecture"}
        vision = QwenVisionConfig.from_dict(d.pop("vision"))
        text = text_from_dict(d.pop("text"))
        for key in ("image_mean", "image_std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(vision=vision, text=text, **d)

    def save(self, path) -> None:
        atomic_write_json(path, self.to_dict(), indent=2)


def rope_index(ids, mask, grid, image_token_index: int, merge: int) -> tuple[jax.Array, jax.Array]:
    """Multimodal RoPE positions [3, B, T] of prompts (ids, mask [B, T]; padding, mask 0, takes 0)
    with at most one image each, of patch grid [B, 2]; and each row's next position [B]."""
    real = mask.astype(bool)
    index = jnp.cumsum(real, axis=1) - 1  # among the row's real tokens
    image = (ids == image_token_index) & real
    seen = jnp.cumsum(image, axis=1)
    k = seen - 1  # an image token's place in its image
    n_before = seen - image  # image tokens before this one
    h, w = grid[:, :1] // merge, jnp.maximum(grid[:, 1:] // merge, 1)
    start = index - k  # an image token's first position
    text = index - n_before + jnp.where(n_before > 0, jnp.maximum(h, w), 0)
    streams = jnp.stack(
        [
            jnp.where(image, start, text),
            jnp.where(image, start + k // w, text),
            jnp.where(image, start + k % w, text),
        ]
    )
    streams = jnp.where(real[None], streams, 0).astype(jnp.int32)
    following = jnp.max(jnp.where(real[None], streams, -1), axis=(0, 2)) + 1
    return streams, following.astype(jnp.int32)


class Qwen2_5_VLModel(ImageTextModel):
    """(input_ids, image input {"patches" [B, N, patch_dim], "grid" [B, 2]}) -> (logits, cache),
    the interface of `LlavaModel`."""

    config: Qwen2_5_VLConfig

    def setup_image_side(self, kw: dict[str, Any]) -> None:
        self.visual = QwenVisionTower(self.config.vision, attn_impl=self.attn_impl, **kw)
        self.merger = PatchMerger(self.config.vision, **kw)  # apart from the tower: it trains

    def image_features(self, pixel_values) -> jax.Array:
        """[B, N / 4, hidden]: the k-th of a row its image's k-th merged token (padding's after)."""
        h = self.visual(pixel_values["patches"], pixel_values["grid"])
        return constrain(self.merger(h), ("batch", "length", "act_embed"))

    def prompt_positions(self, ids, mask, pixels=None) -> tuple[jax.Array, jax.Array]:
        """The three position streams of a prompt batch and each row's next position (`rope_index`)."""
        grid = jnp.zeros((ids.shape[0], 2), jnp.int32) if pixels is None else pixels["grid"]
        return rope_index(ids, mask, grid, self.config.image_token_index, self.config.vision.spatial_merge_size)

    def example_inputs(self, batch: int = 1) -> tuple[jax.Array, dict]:
        """(ids [batch, 1 + 1], an image of 2 x 2 patches): inputs that touch every parameter."""
        c, v = self.config, self.config.vision
        ids = jnp.asarray([[1, c.image_token_index]] * batch, jnp.int32)
        s = v.spatial_merge_size
        grid = jnp.full((batch, 2), s, jnp.int32)
        return ids, {"patches": jnp.zeros((batch, s * s, v.patch_dim), jnp.float32), "grid": grid}

    def __call__(
        self, input_ids, pixel_values=None, attention_mask=None, positions=None, cache=None, return_hidden: bool = False
    ):
        """As `ImageTextModel`; without `positions`, an image's prompt takes `rope_index`'s."""
        if positions is None and pixel_values is not None:
            mask = jnp.ones_like(input_ids) if attention_mask is None else attention_mask
            positions, _ = self.prompt_positions(input_ids, mask, pixel_values)
        return super().__call__(input_ids, pixel_values, attention_mask, positions, cache, return_hidden)
