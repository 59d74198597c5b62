"""MiniGPT-v2 (Chen et al. 2023; Vision-CAIR/MiniGPT-4, `minigpt4/models/minigpt_v2.py`): the EVA
ViT-g tower -> `ln_vision` -> CLS dropped -> 4 consecutive patches joined -> `llama_proj` ->
Llama-2-chat, LoRA on q_proj and v_proj.

The patches are joined as the authors' `view(B, N / 4, 4 * width)` joins them: 4 consecutive
patches in row-major order, a 1x4 strip of the grid, not a 2x2 block. 1,024 patches at 448 px
give 256 visual tokens.

The visual tokens enter the sequence as LLaVA's do: `input_ids` carry `image_token_index` once per
visual token, and those positions take the projected features (`llava.ImageTextModel`).
Llama-2's vocabulary has no image token, so `image_token_index` is the vocabulary size, an id that
is never embedded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from vlguard_jax.errors import CheckpointError
from vlguard_jax.models.config import LoraSpec, TextConfig, text_from_dict, text_to_dict
from vlguard_jax.models.eva import EvaConfig, EvaVisionTower
from vlguard_jax.models.layers import Dense, LayerNorm
from vlguard_jax.models.llava import ImageTextModel
from vlguard_jax.sharding import constrain
from vlguard_jax.storage.files import atomic_write_json

LORA = LoraSpec(rank=64, alpha=16.0, dropout=0.05, targets=("q_proj", "v_proj"))  # minigpt_v2.py's defaults


@dataclasses.dataclass(frozen=True)
class MiniGPTv2Config:
    vision: EvaConfig = EvaConfig()
    text: TextConfig = TextConfig()
    image_token_index: int = 32000  # the vocabulary size: a placeholder id, never embedded
    merge: int = 4  # consecutive patches joined into one visual token
    ln_vision_eps: float = 1e-5  # ln_vision is a plain nn.LayerNorm (eps 1e-5), run in float32
    lora: LoraSpec | None = None  # the checkpoint's own LoRA factors, kept beside the base weights
    architecture = "minigptv2"

    def __post_init__(self):
        if self.vision.num_patches % self.merge:
            raise CheckpointError(f"{self.vision.num_patches} patches do not split into groups of {self.merge}")
        if self.text.hidden_act != "silu":
            raise CheckpointError(f"text hidden_act {self.text.hidden_act!r} is not supported (Llama uses silu)")

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches // self.merge

    def image_flops(self, slots: int = 0) -> tuple[float, int, int]:
        """(forward FLOPs of one image through the tower, llama_proj's weights, image tokens), for
        MFU; `slots` does not apply (every image has one shape)."""
        weights = self.merge * self.vision.hidden_size * self.text.hidden_size
        return self.vision.forward_flops(), weights, self.num_image_tokens

    def to_dict(self) -> dict:
        return {
            "architecture": self.architecture,
            "vision": dataclasses.asdict(self.vision),
            "text": text_to_dict(self.text),
            "image_token_index": self.image_token_index,
            "merge": self.merge,
            "ln_vision_eps": self.ln_vision_eps,
            "lora": dict(dataclasses.asdict(self.lora), targets=list(self.lora.targets)) if self.lora else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> MiniGPTv2Config:
        d = {k: v for k, v in d.items() if k != "architecture"}
        lora = d.pop("lora", None)
        lora = LoraSpec(**{**lora, "targets": tuple(lora["targets"])}) if lora else None
        return cls(vision=EvaConfig(**d.pop("vision")), text=text_from_dict(d.pop("text")), lora=lora, **d)

    def save(self, path) -> None:
        atomic_write_json(path, self.to_dict(), indent=2)


class MiniGPTv2Model(ImageTextModel):
    """The same interface as `LlavaModel`: (input_ids, pixel_values) -> (logits, cache)."""

    config: MiniGPTv2Config

    def setup_image_side(self, kw: dict[str, Any]) -> None:
        c = self.config
        self.vision_tower = EvaVisionTower(c.vision, attn_impl=self.attn_impl, **kw)
        self.ln_vision = LayerNorm(c.ln_vision_eps, **kw)
        self.llama_proj = Dense(c.text.hidden_size, ("vision_embed", "embed"), use_bias=True, **kw)

    def image_features(self, pixel_values) -> jax.Array:
        h = self.ln_vision(self.vision_tower(pixel_values))[:, 1:]
        b, n, d = h.shape
        h = h.reshape(b, n // self.config.merge, d * self.config.merge)
        return constrain(self.llama_proj(h), ("batch", "length", "act_embed"))

    def embed(self, input_ids) -> jax.Array:
        is_image = input_ids == self.config.image_token_index
        return self.language_model.embed(jnp.where(is_image, 0, input_ids))  # the placeholder is never embedded
