"""LLaVA-1.5's config, read from llava-hf (`LlavaForConditionalGeneration`, any transformers
version) and original-LLaVA (`LlavaLlamaForCausalLM`, `mm_*` keys) config.json files."""

from __future__ import annotations

import dataclasses
from typing import Any

from vlguard_jax.errors import CheckpointError
from vlguard_jax.models.config import (
    TextConfig,
    VisionConfig,
    text_from_dict,
    text_from_hf,
    text_to_dict,
    vision_from_hf,
)
from vlguard_jax.storage.files import atomic_write_json

# The OpenAI CLIP towers LLaVA names in `mm_vision_tower`; their shapes cannot all be read from
# the weights (the head count is not), so they are listed here.
KNOWN_CLIP_TOWERS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
    ),
    "openai/clip-vit-large-patch14": dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
    ),
}


@dataclasses.dataclass(frozen=True)
class LlavaConfig:
    vision: VisionConfig = VisionConfig()
    text: TextConfig = TextConfig()
    image_token_index: int = 32000
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "default"
    projector_hidden_act: str = "gelu"
    projector_bias: bool = True

    def __post_init__(self):
        if self.vision_feature_select_strategy not in ("default", "full"):
            raise CheckpointError(
                f"vision_feature_select_strategy must be 'default' or 'full', "
                f"got {self.vision_feature_select_strategy!r}"
            )
        n = self.vision.num_hidden_layers
        if not -(n + 1) <= self.vision_feature_layer <= n:
            raise CheckpointError(
                f"vision_feature_layer {self.vision_feature_layer} is out of range for a tower with {n} layers"
            )
        if self.vision.hidden_act != "quick_gelu":
            raise CheckpointError(
                f"vision hidden_act {self.vision.hidden_act!r} is not supported (CLIP towers use quick_gelu)"
            )
        if self.text.hidden_act != "silu":
            raise CheckpointError(f"text hidden_act {self.text.hidden_act!r} is not supported (Llama uses silu)")
        if self.projector_hidden_act != "gelu":
            raise CheckpointError(
                f"projector_hidden_act {self.projector_hidden_act!r} is not supported "
                "(LLaVA-1.5's mlp2x_gelu uses exact gelu)"
            )
        if self.text.rope_scaling and dict(self.text.rope_scaling).get("rope_type") not in ("llama3",):
            raise CheckpointError(
                f"rope scaling {dict(self.text.rope_scaling)} is not supported (default and llama3 are)"
            )

    @property
    def num_image_tokens(self) -> int:
        extra = 1 if self.vision_feature_select_strategy == "full" else 0
        return self.vision.num_patches + extra

    @property
    def num_vision_layers_used(self) -> int:
        """Layers of the tower that feed the selected hidden state (the rest never run)."""
        n = self.vision.num_hidden_layers
        return self.vision_feature_layer % (n + 1)

    def image_flops(self, slots: int = 0) -> tuple[float, int, int]:
        """(forward FLOPs of one image through the tower's used layers, projector weights, image
        tokens), for MFU (train.flops); `slots` does not apply (every image has one shape)."""
        v, t = self.vision, self.text
        patches = self.num_image_tokens + (self.vision_feature_select_strategy == "default")
        per_patch = self.num_vision_layers_used * (
            2 * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size) + 4 * patches * v.hidden_size
        )
        projector = v.hidden_size * t.hidden_size + t.hidden_size * t.hidden_size
        return float(patches * per_patch), projector, self.num_image_tokens

    def replace(self, **kw) -> LlavaConfig:
        return dataclasses.replace(self, **kw)

    # ---- our own JSON (written next to converted checkpoints) -------------------------------
    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), text=text_to_dict(self.text))

    @classmethod
    def from_dict(cls, d: dict) -> LlavaConfig:
        d = dict(d)
        text = text_from_dict(d.pop("text"))
        return cls(vision=VisionConfig(**d.pop("vision")), text=text, **d)

    def save(self, path) -> None:
        atomic_write_json(path, self.to_dict(), indent=2)

    # ---- Hugging Face --------------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: dict, *, source: str = "config.json") -> LlavaConfig:
        """From a llava-hf config.json dict (keys of transformers 4.x or 5.x)."""
        if "text_config" not in hf or "vision_config" not in hf:
            raise CheckpointError(f"{source}: not a llava-hf config (no text_config/vision_config)")
        layer = hf.get("vision_feature_layer", -2)
        if not isinstance(layer, int):
            raise CheckpointError(
                f"{source}: vision_feature_layer {layer!r} is not supported (a single layer index is)"
            )
        text = text_from_hf(hf["text_config"], source=source)
        if "tie_word_embeddings" in hf:  # transformers 5 keeps it at the top level
            text = dataclasses.replace(text, tie_word_embeddings=hf["tie_word_embeddings"])
        return cls(
            vision=vision_from_hf(hf["vision_config"]),
            text=text,
            image_token_index=hf.get("image_token_index", hf.get("image_token_id", 32000)),
            vision_feature_layer=layer,
            vision_feature_select_strategy=hf.get("vision_feature_select_strategy", "default"),
            projector_hidden_act=hf.get("projector_hidden_act", "gelu"),
            projector_bias=hf.get("multimodal_projector_bias", True),
        )

    @classmethod
    def from_original_llava(
        cls, hf: dict, vision: VisionConfig | None, image_token_index: int, *, source: str = "config.json"
    ) -> LlavaConfig:
        """From an original-LLaVA config.json (`LlavaLlamaForCausalLM`, `mm_*` keys)."""
        ptype = hf.get("mm_projector_type", "linear")
        if ptype != "mlp2x_gelu":
            raise CheckpointError(f"{source}: mm_projector_type {ptype!r} is not supported (mlp2x_gelu is)")
        if vision is None:
            tower = hf.get("mm_vision_tower")
            if tower not in KNOWN_CLIP_TOWERS:
                raise CheckpointError(
                    f"{source}: vision tower {tower!r} is not a known CLIP; "
                    "pass --vision-tower DIR with its config.json"
                )
            vision = VisionConfig(**KNOWN_CLIP_TOWERS[tower])
        if hf.get("mm_hidden_size", vision.hidden_size) != vision.hidden_size:
            raise CheckpointError(
                f"{source}: mm_hidden_size {hf['mm_hidden_size']} != vision hidden size {vision.hidden_size}"
            )
        strategy = {"patch": "default", "cls_patch": "full"}.get(hf.get("mm_vision_select_feature", "patch"))
        if strategy is None:
            raise CheckpointError(
                f"{source}: mm_vision_select_feature {hf['mm_vision_select_feature']!r} "
                "is not supported (patch, cls_patch are)"
            )
        return cls(
            vision=vision,
            text=text_from_hf(hf, source=source),
            image_token_index=image_token_index,
            vision_feature_layer=hf.get("mm_vision_select_layer", -2),
            vision_feature_select_strategy=strategy,
        )

    def to_hf(self) -> dict:
        """A llava-hf config.json dict that `LlavaConfig.from_dict` in transformers reads."""
        t, v = self.text, self.vision
        rope = {"rope_type": "default", "rope_theta": t.rope_theta}
        if t.rope_scaling:
            rope.update(t.rope_scaling_dict or {})
            rope["rope_theta"] = t.rope_theta
        eos = list(t.eos_token_id) if isinstance(t.eos_token_id, tuple) else t.eos_token_id
        text_config = dict(
            model_type="llama",
            vocab_size=t.vocab_size,
            hidden_size=t.hidden_size,
            intermediate_size=t.intermediate_size,
            num_hidden_layers=t.num_hidden_layers,
            num_attention_heads=t.num_attention_heads,
            num_key_value_heads=t.num_key_value_heads,
            head_dim=t.head_dim,
            rms_norm_eps=t.rms_norm_eps,
            rope_theta=t.rope_theta,
            rope_parameters=rope,
            rope_scaling=rope if t.rope_scaling else None,
            max_position_embeddings=t.max_position_embeddings,
            attention_bias=t.attention_bias,
            mlp_bias=t.mlp_bias,
            hidden_act=t.hidden_act,
            tie_word_embeddings=t.tie_word_embeddings,
            bos_token_id=t.bos_token_id,
            eos_token_id=eos,
            pad_token_id=t.pad_token_id,
        )
        vision_config = dict(
            model_type="clip_vision_model",
            hidden_size=v.hidden_size,
            intermediate_size=v.intermediate_size,
            num_hidden_layers=v.num_hidden_layers,
            num_attention_heads=v.num_attention_heads,
            image_size=v.image_size,
            patch_size=v.patch_size,
            num_channels=v.num_channels,
            layer_norm_eps=v.layer_norm_eps,
            hidden_act=v.hidden_act,
            projection_dim=768,
        )
        return dict(
            architectures=["LlavaForConditionalGeneration"],
            model_type="llava",
            text_config=text_config,
            vision_config=vision_config,
            image_token_index=self.image_token_index,
            image_token_id=self.image_token_index,
            image_seq_length=self.num_image_tokens,
            vision_feature_layer=self.vision_feature_layer,
            vision_feature_select_strategy=self.vision_feature_select_strategy,
            projector_hidden_act=self.projector_hidden_act,
            multimodal_projector_bias=self.projector_bias,
            tie_word_embeddings=t.tie_word_embeddings,
        )
