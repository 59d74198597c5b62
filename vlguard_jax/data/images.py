"""Pixels as LLaVA-1.5 makes them.

Training (`image_aspect_ratio=pad`): open, `.convert("RGB")`, pad to a centred square with the
CLIP mean colour (122, 116, 104), then CLIP preprocessing: shortest edge to `size` (PIL bicubic),
centre crop, x/255, normalise. Evaluation (the VLGuard scripts): the same without the pad.

LLaVA drops an alpha channel (`convert("RGB")`); `alpha="white"` composites onto white instead,
which is what `CLIPImageProcessor` does when given an RGBA image itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from vlguard_jax import storage
from vlguard_jax.errors import UserError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PAD_COLOR = tuple(int(m * 255) for m in CLIP_MEAN)  # (122, 116, 104), as LLaVA computes it
MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485  # 89,478,485: PIL's own decompression-bomb threshold


class ImageError(UserError, ValueError):
    """A missing, unreadable or out-of-root image; the message names the path."""


def resolve(root, relative: str) -> Path:
    """`root/relative`, refusing absolute paths and anything that escapes the root (`..`, links;
    in a bucket, which has no links, `..` after normalisation)."""
    if os.path.isabs(relative) or storage.is_remote(relative):
        raise ImageError(f"image path {relative!r} is absolute; paths must be relative to the image root {root}")
    if storage.is_remote(root):
        base = str(root).rstrip("/")
        joined = posixpath.normpath(posixpath.join("/root", relative))
        if not joined.startswith("/root/"):
            raise ImageError(f"image path {relative!r} resolves outside the image root {base}")
        return storage.as_path(base + joined[len("/root") :])
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, relative))
    if not (path + os.sep).startswith(real_root.rstrip(os.sep) + os.sep):
        raise ImageError(f"image path {relative!r} resolves to {path}, outside the image root {real_root}")
    return Path(path)


@contextlib.contextmanager
def _opened(path) -> Iterator[Image.Image]:
    """`path` opened by PIL, its header read and its pixels not yet decoded; a missing, oversized
    or undecodable file (here or in the block) is an ImageError naming it."""
    try:
        with (
            storage.as_path(path).open("rb") if storage.is_remote(path) else open(path, "rb") as f,
            Image.open(f) as img,
        ):
            yield img
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: over the pixel limit, refused before decoding ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from None


def open_rgb(path, alpha: str = "drop", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An RGB image; one over `max_pixels` is refused from its header, before it is decoded."""
    with _opened(path) as img:
        w, h = img.size
        if w * h > max_pixels:
            raise ImageError(
                f"{path}: {w}x{h} pixels, over the limit of {max_pixels:,} (data.max_image_pixels); refused before decoding"
            )
        img.load()
        if alpha == "white" and ("A" in img.getbands() or "transparency" in img.info):
            rgba = img.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", img.size, (255,) * 4), rgba).convert("RGB")
        return img.convert("RGB")


def image_size(path) -> tuple[int, int]:
    """(width, height) of an image from its header, without decoding it."""
    with _opened(path) as img:
        return img.size


def expand2square(img: Image.Image, color=PAD_COLOR) -> Image.Image:
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), color)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def clip_preprocess(img: Image.Image, size: int) -> np.ndarray:
    """[3, size, size] float32, as CLIPImageProcessor (shortest_edge=size, crop size x size)."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    x = np.asarray(img, np.float64)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    if top < 0 or left < 0:
        raise ImageError(f"image of size {w}x{h} resized to {new_w}x{new_h} is smaller than the crop {size}")
    x = x[top : top + size, left : left + size].astype(np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), np.float32)


def squash_preprocess(img: Image.Image, size: int) -> np.ndarray:
    """[3, size, size] float32: resized to a size x size square whatever its aspect ratio (bicubic;
    no crop, no pad), then CLIP's mean and std. BLIP-2's processor, which MiniGPT-v2 trains and
    evaluates with (`Resize((size, size), BICUBIC)`, `ToTensor`, `Normalize`)."""
    x = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), np.float32)


RESIZE_LIMIT = 1 << 24  # pixels of a resize's intermediate: 16.8M (a 336 px side at 148:1)


Pixels = Any  # one image's model input: an array, or a dict of them (pixels plus e.g. a patch grid)


class PixelRule(Protocol):
    """How a model family turns an RGB image into its model's input for one image (`Pixels`).
    `key` is the image's shape class: images of one class give inputs of one shape and take
    `tokens * prod(key)` image tokens; `()` where every image has the same shape."""

    @property
    def size(self) -> int: ...

    varies: ClassVar[bool]  # images differ in shape class: the token store reads each image's size

    def work(self, w: int, h: int, pad: bool) -> tuple[float, float]:
        """The pixels of the rule's intermediates for a w x h image: (padded, resized)."""
        ...

    def key(self, w: int, h: int, pad: bool) -> tuple[int, ...]: ...

    def key_of(self, x: Pixels) -> tuple[int, ...]:
        """The shape class of an input this rule made."""
        ...

    def blank(self, key: tuple[int, ...], channels: int) -> Pixels:
        """Zeros shaped as one image of class `key`: the slot of a row without an image."""
        ...

    def room(self, tokens: int) -> int:
        """The input slots an image of `tokens` image tokens fills (0 for a fixed-shape rule)."""
        ...

    def widen(self, x: Pixels, room: int) -> Pixels:
        """`x` padded to `room` slots (at least its own), so images of several classes batch."""
        ...

    def room_of(self, x: Pixels) -> int:
        """The slots of an input this rule made, or of a batch of them (0 for a fixed shape)."""
        ...

    def __call__(self, img: Image.Image, pad: bool) -> Pixels: ...


@dataclasses.dataclass(frozen=True)
class FixedSquare:
    """A rule whose every image becomes one [channels, size, size] array."""

    size: int
    varies: ClassVar[bool] = False

    def key(self, w: int, h: int, pad: bool) -> tuple[int, ...]:
        return ()

    def key_of(self, x: Pixels) -> tuple[int, ...]:
        return ()

    def blank(self, key: tuple[int, ...], channels: int) -> Pixels:
        return np.zeros((channels, self.size, self.size), np.float32)

    def room(self, tokens: int) -> int:
        return 0

    def widen(self, x: Pixels, room: int) -> Pixels:
        return x

    def room_of(self, x: Pixels) -> int:
        return 0


@dataclasses.dataclass(frozen=True)
class ClipPixels(FixedSquare):
    """CLIP's processor, after padding to a square when `pad` (`expand2square`, `clip_preprocess`)."""

    def work(self, w: int, h: int, pad: bool) -> tuple[float, float]:
        short, long = (w, h) if w <= h else (h, w)
        return (max(w, h) ** 2, self.size**2) if pad else (w * h, self.size**2 * long / short)

    def __call__(self, img: Image.Image, pad: bool) -> np.ndarray:
        return clip_preprocess(expand2square(img) if pad else img, self.size)


@dataclasses.dataclass(frozen=True)
class SquashPixels(FixedSquare):
    """BLIP-2's processor (`squash_preprocess`); `pad` does not apply."""

    def work(self, w: int, h: int, pad: bool) -> tuple[float, float]:
        return w * h, self.size * max(w, h)

    def __call__(self, img: Image.Image, pad: bool) -> np.ndarray:
        return squash_preprocess(img, self.size)


def shapes(x: Pixels) -> tuple:
    """The shapes of an image input's arrays: rows batch together only where these are equal."""
    if isinstance(x, dict):
        return tuple((k, shapes(x[k])) for k in sorted(x))
    return np.shape(x)


@dataclasses.dataclass(frozen=True)
class ImageInput:
    """How a model takes one image (its family's `image_input`): the input `rule` makes (an array
    [channels, size, size] for a `FixedSquare` rule, or a dict of arrays), which takes
    `count(input)` image tokens in its prompt (`tokens` for a rule whose images have one shape).
    The one way training, generate, evaluate, vqa and the suite make an image's input."""

    rule: PixelRule
    channels: int
    tokens: int

    @property
    def size(self) -> int:
        return self.rule.size

    def tokens_for(self, key: tuple[int, ...]) -> int:
        """Image tokens of an image of shape class `key`."""
        return self.tokens * math.prod(key)

    def count(self, x: Pixels) -> int:
        """Image tokens the image input `x` takes."""
        return self.tokens_for(self.rule.key_of(x))

    def blank(self, batch: int, key: tuple[int, ...] = ()) -> Pixels:
        """Zeros for `batch` rows of shape class `key` (float32): the slot of rows without an image."""
        return _zeros(batch, self.rule.blank(key, self.channels))

    def pixels(self, img: Image.Image, pad: bool, name: object = "image", max_pixels: int = MAX_PIXELS) -> Pixels:
        """One decoded image as the model takes it; an oversized intermediate is refused first."""
        check_work_size(img, self.rule, pad, name, max_pixels)
        return self.rule(img, pad)

    def load(self, root, relative: str, pad: bool, alpha: str = "drop", max_pixels: int = MAX_PIXELS) -> Pixels:
        """The image at `root/relative` (resolved inside the root), decoded and made pixels."""
        path = resolve(root, relative)
        return self.pixels(open_rgb(path, alpha, max_pixels), pad, path, max_pixels)


def _zeros(batch: int, x: Pixels) -> Pixels:
    if isinstance(x, dict):
        return {k: _zeros(batch, v) for k, v in x.items()}
    return np.zeros((batch, *np.shape(x)), np.asarray(x).dtype)


def put(batch: Pixels, row: int, x: Pixels) -> None:
    """Write one image input into row `row` of a stacked batch of the same shape."""
    if isinstance(batch, dict):
        for k in batch:
            put(batch[k], row, x[k])
    else:
        batch[row] = x


def check_work_size(img: Image.Image, rule: PixelRule, pad: bool, name: object, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image whose intermediate would be over `max_pixels`, before it is made: padding
    makes a max(w, h) square, CLIP's resize before the crop a `size` x `size * long / short`
    image, and a squash's first pass `size * long` pixels; a resize's is also bounded by
    RESIZE_LIMIT. A thin image under the pixel limit (1x60000 is 60,000 pixels) would otherwise
    take gigabytes there."""
    w, h = img.size
    padded, resized = rule.work(w, h, pad)
    if padded > max_pixels:
        raise ImageError(
            f"{name}: {w}x{h} pixels; padding it to a {max(w, h)}x{max(w, h)} square would make over "
            f"{max_pixels:,} pixels (data.max_image_pixels); refused"
        )
    if resized > min(max_pixels, RESIZE_LIMIT):
        raise ImageError(
            f"{name}: {w}x{h} pixels; resizing it to {rule.size} px would make over {min(max_pixels, RESIZE_LIMIT):,} "
            "pixels on the way (its sides are too far apart); refused"
        )


def pixels(img: Image.Image, size: int, pad: bool, name: object = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image by CLIP's processor (`ClipPixels`, three channels)."""
    return ImageInput(ClipPixels(size), 3, 0).pixels(img, pad, name, max_pixels)


def load_pixels(
    root, relative: str, size: int, pad: bool, alpha: str = "drop", max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Resolve under `root`, decode and preprocess one image by CLIP's processor (`ClipPixels`)."""
    return ImageInput(ClipPixels(size), 3, 0).load(root, relative, pad, alpha, max_pixels)
