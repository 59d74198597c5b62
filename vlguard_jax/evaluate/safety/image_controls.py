"""Image controls: the same prompts answered without the real image, to tell how much of a refusal
the image drove (`--image-control`).

- `none`: the image removed; the prompt is asked as a text-only one (no image tag).
- `blank`: a white image of the image's size.
- `noise`: uniform RGB noise of the image's size, drawn from numpy's Generator seeded by the run's
  seed and the prompt's key, so a rerun sees the same noise.
- `blur`: the image under a Gaussian blur of radius BLUR_FRACTION of its longer side (PIL's
  GaussianBlur), which keeps its colours and layout and removes its detail and text.

The control replaces the image before the family's pixel rule, so the model sees it as it would
see any image of that size. A control is part of a run's identity: its answers never mix with a
real-image run's in one --out.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image, ImageFilter

CONTROLS = ("none", "blank", "noise", "blur")
WHITE = (255, 255, 255)
BLUR_FRACTION = 0.02


def _rng(key: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)])


def controlled(img: Image.Image, control: str, key: str, seed: int = 0) -> Image.Image | None:
    """What the model sees in place of `img` (an RGB image) under `control` (None: no image)."""
    if control == "none":
        return None
    if control == "blank":
        return Image.new("RGB", img.size, WHITE)
    if control == "noise":
        w, h = img.size
        return Image.fromarray(_rng(key, seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    if control == "blur":
        return img.filter(ImageFilter.GaussianBlur(BLUR_FRACTION * max(img.size)))
    raise ValueError(f"unknown image control {control!r}")  # a bug: Protocol checks the name
