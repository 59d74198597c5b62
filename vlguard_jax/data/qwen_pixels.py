"""Pixels as Qwen2-VL's image processor makes them (`Qwen2VLImageProcessor`), in buckets.

An image keeps about its aspect ratio and size: `smart_resize` picks both sides as multiples of
28 px (a merged token's side) with the area inside [min_pixels, max_pixels]; PIL bicubic, x/255,
CLIP's mean and std; then cut into 14 px patches in 2x2-block order, each repeated over the 2
temporal steps (a still image), flattened to [grid_h * grid_w, 3 * 2 * 14 * 14].

Buckets: XLA compiles one program per shape, so the patches are padded with zeros to a bucket,
the next power of two from 16 (the fewest patches an image has at the default min_pixels), the
last bucket being the most patches max_pixels allows. A model run thus compiles at most
ceil(log2(max_pixels / 196 / 16)) + 1 shapes of image input (13 at the default max_pixels, 10
at max_pixels = 1003520, about a 1,000 x 1,000 image; `buckets()` lists them), and the tower
masks the padding
(`models.qwen_vision`), so the outputs are those of the unpadded image. The image input is a dict:
`patches` [bucket, 1176] float32 and `grid` int32 [2] (grid_h, grid_w in patches).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np
from PIL import Image

from vlguard_jax.data.images import CLIP_MEAN, CLIP_STD, ImageError

MIN_BUCKET = 16


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width), multiples of `factor`, the area in [min_pixels, max_pixels], the aspect
    ratio about kept: the processor's rule (Qwen2-VL's `smart_resize`). An aspect ratio over 200
    is refused, as there."""
    if max(height, width) / min(height, width) > 200:
        raise ImageError(f"{width}x{height}: aspect ratio over 200, which Qwen2-VL's processor refuses")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


@dataclasses.dataclass(frozen=True)
class QwenPixels:
    """The `data.images.PixelRule` of Qwen2-VL's processor (module doc). Its shape class is the
    merged-token grid (h, w), which takes h * w image tokens."""

    min_pixels: int
    max_pixels: int
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    patch: int = 14
    merge: int = 2
    temporal: int = 2
    varies: ClassVar[bool] = True

    @property
    def size(self) -> int:
        """A merged token's side in pixels: image sides are multiples of it."""
        return self.patch * self.merge

    @property
    def patch_dim(self) -> int:
        return len(self.mean) * self.temporal * self.patch**2

    def resized(self, w: int, h: int) -> tuple[int, int]:
        """(width, height) the processor resizes a w x h image to."""
        rh, rw = smart_resize(h, w, self.size, self.min_pixels, self.max_pixels)
        return rw, rh

    def bucket(self, patches: int) -> int:
        """The padded patch count of an image of `patches` patches (module doc)."""
        largest = self.max_pixels // self.patch**2 // self.merge**2 * self.merge**2
        patches = int(patches)
        b = max(MIN_BUCKET, 1 << max(patches - 1, 0).bit_length())
        return max(patches, min(b, largest))

    def buckets(self) -> list[int]:
        """Every bucket an image in range can take, smallest first."""
        least = self.min_pixels // self.patch**2
        out, n = [], max(1, least)
        largest = self.bucket(self.max_pixels // self.patch**2 // self.merge**2 * self.merge**2)
        while True:
            b = self.bucket(n)
            out.append(b)
            if b >= largest:
                return sorted(set(out))
            n = b + 1

    def work(self, w: int, h: int, pad: bool) -> tuple[float, float]:
        rw, rh = self.resized(w, h)
        return w * h, rw * rh

    def key(self, w: int, h: int, pad: bool) -> tuple[int, ...]:
        rw, rh = self.resized(w, h)
        return rh // self.size, rw // self.size

    def key_of(self, x) -> tuple[int, ...]:
        gh, gw = (int(v) for v in np.asarray(x["grid"]))
        return gh // self.merge, gw // self.merge

    def blank(self, key: tuple[int, ...], channels: int) -> dict:
        """Zeros for an image of merged grid `key` (`()`: the smallest bucket, no patch real)."""
        gh, gw = (k * self.merge for k in key) if key else (0, 0)
        return {
            "patches": np.zeros((self.bucket(gh * gw), self.patch_dim), np.float32),
            "grid": np.asarray([gh, gw], np.int32),
        }

    def room(self, tokens: int) -> int:
        """The bucket of an image of `tokens` merged tokens."""
        return self.bucket(tokens * self.merge**2)

    def widen(self, x: dict, room: int) -> dict:
        """`x` with its patches padded (zeros, not real) to `room` slots."""
        n = x["patches"].shape[0]
        if room <= n:
            return x
        return dict(x, patches=np.pad(x["patches"], ((0, room - n), (0, 0))))

    def room_of(self, x: dict) -> int:
        return int(np.shape(x["patches"])[-2])

    def __call__(self, img: Image.Image, pad: bool) -> dict:
        """The image's patches, padded to its bucket, and its grid (`pad` does not apply)."""
        rw, rh = self.resized(*img.size)
        x = (np.asarray(img.resize((rw, rh), Image.Resampling.BICUBIC)) * (1 / 255)).astype(
            np.float32
        )  # as the processor rounds
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        p, m = self.patch, self.merge
        gh, gw = rh // p, rw // p
        x = x.transpose(2, 0, 1).reshape(-1, gh // m, m, p, gw // m, m, p)  # C, bh, mh, ph, bw, mw, pw
        x = x.transpose(1, 4, 2, 5, 0, 3, 6)  # bh, bw, mh, mw, C, ph, pw
        x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], self.temporal, p, p))
        patches = np.zeros((self.bucket(gh * gw), self.patch_dim), np.float32)
        patches[: gh * gw] = x.reshape(gh * gw, self.patch_dim)
        return {"patches": patches, "grid": np.asarray([gh, gw], np.int32)}
