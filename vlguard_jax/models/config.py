"""The parts every family's config is made of: plain frozen dataclasses for a ViT tower
(`VisionConfig`) and a Llama-style decoder (`TextConfig`), read from Hugging Face config.json
dicts, with the LoRA and scanning settings. Each family's own config is in its own module
(`llava_config.py`, `text_only_config.py`, `minigptv2.py`, `qwen2_5_vl.py`).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from vlguard_jax.errors import CheckpointError, ConfigError


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 336
    patch_size: int = 14
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int = 128
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # None, or the llama3 rule: {"rope_type": "llama3", "factor", "low_freq_factor", ...}.
    rope_scaling: tuple | None = None
    max_position_embeddings: int = 4096
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | tuple | None = 2
    pad_token_id: int | None = None
    qkv_bias: bool = False  # biases on q, k and v alone (Qwen2), whatever attention_bias says of o
    # Multimodal RoPE: the rotary frequencies split into sections, section i rotating by position
    # stream i (temporal, height, width); None: one stream.
    mrope_section: tuple[int, ...] | None = None

    @property
    def rope_scaling_dict(self) -> dict | None:
        return dict(self.rope_scaling) if self.rope_scaling else None


def text_to_dict(text: TextConfig) -> dict:
    """As JSON holds it: tuples as lists, so a config read back compares equal (a run's identity)."""
    d = dict(dataclasses.asdict(text), rope_scaling=text.rope_scaling_dict)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def text_from_dict(text: dict) -> TextConfig:
    text = dict(text)
    if text.get("rope_scaling"):
        text["rope_scaling"] = tuple(sorted(text["rope_scaling"].items()))
    for key in ("eos_token_id", "mrope_section"):
        if isinstance(text.get(key), list):
            text[key] = tuple(text[key])
    return TextConfig(**text)


def vision_from_hf(d: dict) -> VisionConfig:
    if "vision_config" in d:  # a full CLIPModel config.json
        d = d["vision_config"]
    fields = {f.name for f in dataclasses.fields(VisionConfig)}
    return VisionConfig(**{k: v for k, v in d.items() if k in fields})


def text_from_hf(d: dict, *, source: str = "config.json") -> TextConfig:
    heads = d.get("num_attention_heads", 32)
    hidden = d.get("hidden_size", 4096)
    rope = d.get("rope_parameters") or {}
    theta = d.get("rope_theta") or rope.get("rope_theta") or 10000.0
    scaling = d.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    if scaling:
        scaling = dict(scaling)
        scaling.setdefault("rope_type", scaling.pop("type", None))
        scaling.pop("rope_theta", None)
        if scaling["rope_type"] == "default":
            scaling = None
        elif scaling["rope_type"] != "llama3":
            raise CheckpointError(f"{source}: rope scaling {scaling} is not supported (default and llama3 are)")
    eos = d.get("eos_token_id", 2)
    kw: dict[str, Any] = dict(
        vocab_size=d.get("vocab_size", 32000),
        hidden_size=hidden,
        intermediate_size=d.get("intermediate_size", 11008),
        num_hidden_layers=d.get("num_hidden_layers", 32),
        num_attention_heads=heads,
        num_key_value_heads=d.get("num_key_value_heads") or heads,
        head_dim=d.get("head_dim") or hidden // heads,
        rms_norm_eps=d.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta),
        rope_scaling=tuple(sorted(scaling.items())) if scaling else None,
        max_position_embeddings=d.get("max_position_embeddings", 4096),
        attention_bias=d.get("attention_bias", False),
        mlp_bias=d.get("mlp_bias", False),
        hidden_act=d.get("hidden_act", "silu"),
        tie_word_embeddings=d.get("tie_word_embeddings", False),
        bos_token_id=d.get("bos_token_id", 1),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=d.get("pad_token_id"),
    )
    if d.get("pretraining_tp", 1) != 1:
        raise CheckpointError(f"{source}: pretraining_tp {d['pretraining_tp']} is not supported")
    return TextConfig(**kw)


# The decoder's Dense layers LoRA may target (PEFT's names); every one by default.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """LoRA on the named Dense layers of the language model (PEFT's rule): y = x W + s * drop(x) A B,
    with s = alpha / rank, A Kaiming-uniform and B zero at init, so training starts at the base."""

    rank: int
    alpha: float
    dropout: float = 0.0
    targets: tuple[str, ...] = LORA_TARGETS

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def wants(self, name: str) -> LoraSpec | None:
        return self if name in self.targets else None


class ScanLayers(enum.StrEnum):
    """The one setting for the decoder's form (config.model.scan_layers, `load_model`,
    `load_generator`, the benchmarks); a model holds the decision, a bool."""

    AUTO = "auto"  # on from SCAN_MIN_LAYERS layers, where the family can scan
    ON = "on"
    OFF = "off"

    @classmethod
    def of(cls, setting: ScanLayers | str | bool) -> ScanLayers:
        """The setting from its name; True and False read as on and off."""
        if isinstance(setting, bool):
            return cls.ON if setting else cls.OFF
        try:
            return cls(setting)
        except ValueError:
            raise ConfigError(f"scan_layers must be one of {list(SETTINGS)}, not {setting!r}") from None


SETTINGS = tuple(s.value for s in ScanLayers)
DEFAULT_SCAN = ScanLayers.AUTO
