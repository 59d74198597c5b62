"""Pixels as LLaVA-1.5 makes them.

Training (`image_aspect_ratio=pad`): open, `.convert("RGB")`, pad to a centred square with the
CLIP mean colour (122, 116, 104), then CLIP preprocessing: shortest edge to `size` (PIL bicubic),
centre crop, x/255, normalise. Evaluation (the VLGuard scripts): the same without the pad.

LLaVA drops an alpha channel (`convert("RGB")`); `alpha="white"` composites onto white instead,
which is what `CLIPImageProcessor` does when given an RGBA image itself.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vlguard_jax import storage
from vlguard_jax.errors import UserError
from vlguard_jax.models.config import ImageInput

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


def open_rgb(path, alpha: str = "drop", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An RGB image; one over `max_pixels` is refused from its header, before it is decoded."""
    try:
        with (
            storage.as_path(path).open("rb") if storage.is_remote(path) else open(path, "rb") as f,
            Image.open(f) as img,
        ):
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{path}: {w}x{h} pixels, over the limit of {max_pixels:,} "
                    "(data.max_image_pixels); refused before decoding"
                )
            img.load()
            if alpha == "white" and ("A" in img.getbands() or "transparency" in img.info):
                rgba = img.convert("RGBA")
                return Image.alpha_composite(Image.new("RGBA", img.size, (255,) * 4), rgba).convert("RGB")
            return img.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: over the pixel limit, refused before decoding ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from None


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


IMAGE_TRANSFORMS = ("clip", "squash")  # a model family's image transform (models.family)


RESIZE_LIMIT = 1 << 24  # pixels of a resize's intermediate: 16.8M (a 336 px side at 148:1)


def check_work_size(
    img: Image.Image, size: int, pad: bool, name: object, max_pixels: int = MAX_PIXELS, transform: str = "clip"
) -> None:
    """Refuse an image whose intermediate would be over `max_pixels`, before it is made: padding
    makes a max(w, h) square, CLIP's resize before the crop a `size` x `size * long / short`
    image, and a squash's first pass `size * long` pixels; a resize's is also bounded by
    RESIZE_LIMIT. A thin image under the pixel limit (1x60000 is 60,000 pixels) would otherwise
    take gigabytes there."""
    w, h = img.size
    padded = max(w, h) ** 2 if pad and transform == "clip" else w * h
    short, long = (w, h) if w <= h else (h, w)
    if transform == "squash":
        resized = size * long
    else:
        resized = size * size * long / short if not pad else size * size
    if padded > max_pixels:
        raise ImageError(
            f"{name}: {w}x{h} pixels; padding it to a {max(w, h)}x{max(w, h)} square would make over "
            f"{max_pixels:,} pixels (data.max_image_pixels); refused"
        )
    if resized > min(max_pixels, RESIZE_LIMIT):
        raise ImageError(
            f"{name}: {w}x{h} pixels; resizing it to {size} px would make over {min(max_pixels, RESIZE_LIMIT):,} "
            "pixels on the way (its sides are too far apart); refused"
        )


def pixels(
    img: Image.Image,
    size: int,
    pad: bool,
    name: object = "image",
    max_pixels: int = MAX_PIXELS,
    transform: str = "clip",
) -> np.ndarray:
    """One image as the model takes it. `transform`: "clip" (LLaVA's: CLIP's processor, after
    padding to a square when `pad`) or "squash" (MiniGPT-v2's; `pad` does not apply)."""
    if transform not in IMAGE_TRANSFORMS:
        raise NotImplementedError(f"image transform {transform!r} is not one of {IMAGE_TRANSFORMS}")  # a bug
    check_work_size(img, size, pad, name, max_pixels, transform)
    if transform == "squash":
        return squash_preprocess(img, size)
    return clip_preprocess(expand2square(img) if pad else img, size)


def load_pixels(
    root,
    relative: str,
    size: int,
    pad: bool,
    alpha: str = "drop",
    max_pixels: int = MAX_PIXELS,
    transform: str = "clip",
) -> np.ndarray:
    """Resolve under `root`, decode and preprocess one image."""
    path = resolve(root, relative)
    return pixels(open_rgb(path, alpha, max_pixels), size, pad, path, max_pixels, transform)


def model_pixels(image: ImageInput, img: Image.Image, pad: bool, name: object = "image") -> np.ndarray:
    """One image as a model takes it (its family's `ImageInput`): the one way generate, evaluate,
    vqa and the suite make an image's pixels."""
    return pixels(img, image.size, pad, name, transform=image.transform)


def load_model_pixels(image: ImageInput, root, relative: str, pad: bool) -> np.ndarray:
    """`model_pixels` of the image at `root/relative` (resolved inside the root)."""
    return load_pixels(root, relative, image.size, pad, transform=image.transform)
