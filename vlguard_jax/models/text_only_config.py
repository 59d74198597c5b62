"""A text-only Llama's config (`LlamaForCausalLM`, such as Llama Guard, the safety judge)."""

from __future__ import annotations

import dataclasses

from vlguard_jax.errors import CheckpointError
from vlguard_jax.models.config import TextConfig, text_from_dict, text_from_hf, text_to_dict
from vlguard_jax.storage.files import atomic_write_json


@dataclasses.dataclass(frozen=True)
class TextOnlyConfig:
    """A Llama without a vision tower, behind the same interface (`vision` is None)."""

    text: TextConfig = TextConfig()
    vision = None
    architecture = "llama"

    def to_dict(self) -> dict:
        return {"architecture": self.architecture, "text": text_to_dict(self.text)}

    @classmethod
    def from_dict(cls, d: dict) -> TextOnlyConfig:
        return cls(text=text_from_dict(d["text"]))

    def save(self, path) -> None:
        atomic_write_json(path, self.to_dict(), indent=2)

    @classmethod
    def from_hf(cls, hf: dict, *, source: str = "config.json") -> TextOnlyConfig:
        if hf.get("model_type") != "llama":
            raise CheckpointError(f"{source}: model_type {hf.get('model_type')!r} is not a text-only Llama")
        text = text_from_hf(hf, source=source)
        if text.hidden_act != "silu":
            raise CheckpointError(f"{source}: hidden_act {text.hidden_act!r} is not supported (Llama uses silu)")
        return cls(text=text)
