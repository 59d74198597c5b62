"""`DataConfig`: the training config's `data` block, typed and frozen. Its field defaults are the
defaults (train/defaults.py builds the block from them); `data/` receives this, never a ConfigDict."""

from __future__ import annotations

import dataclasses
from typing import Any

from vlguard_jax.data.images import MAX_PIXELS
from vlguard_jax.errors import ConfigError

AUTO_TEMPLATE = "auto"  # data.template: the first of the checkpoint family's training templates


@dataclasses.dataclass(frozen=True)
class DataConfig:
    recipe: str = "posthoc"  # posthoc | mixed | vlguard | llava
    vlguard: str = "data/vlguard/train.json"
    vlguard_images: str = "data/vlguard/images"
    llava: str = "data/llava_v1_5_mix665k.json"
    llava_images: str = "data/llava_images"
    helpful_samples: int = 5000  # post-hoc: LLaVA rows drawn for helpfulness
    helpful_seed: int = 0
    convert_seed: int = 0  # the authors' VLGuard -> LLaVA conversion draws an instruction per image
    max_length: int = 2048
    template: str = (
        AUTO_TEMPLATE  # the checkpoint family's own training rule, or one it names (Family.training_templates)
    )
    pad_image: bool = True  # LLaVA-1.5 image_aspect_ratio=pad
    pad_to: str = "bucket"  # bucket | max_length
    bucket: int = 128
    group_by_modality: bool = True
    workers: int = 4
    on_bad_record: str = "raise"  # raise | skip (skipped records go to WORKDIR/bad_records.jsonl)
    max_image_pixels: int = MAX_PIXELS  # larger images are bad records, refused before decoding (PIL's limit)

    @classmethod
    def from_config(cls, block: Any) -> DataConfig:
        """From a ConfigDict or dict `data` block (validated by train/validate.py); a key this type
        does not have is a ConfigError naming it."""
        d = dict(block.to_dict() if hasattr(block, "to_dict") else block)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"config.data.{unknown[0]}: not a data setting; those are {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
