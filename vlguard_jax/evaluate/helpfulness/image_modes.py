"""`python -m vlguard_jax.evaluate.helpfulness.image_modes DIR`: how many images of a folder LLaVA's
`model_vqa_science.py` and `model_vqa_mmbench.py` pad differently from us. Those scripts pad an
image to a square in its own mode and convert it to RGB after; we convert first. Only non-square
images outside RGB and RGBA differ (see the README); this counts them, by mode."""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vlguard_jax.errors import ArgumentParser, MissingFileError, cli

SAME = ("RGB", "RGBA")  # padded in their own mode, then converted: the same pixels as ours
SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def count_modes(root) -> dict:
    """{"images", "by_mode": {mode: n}, "differ": n non-square images outside RGB/RGBA,
    "differ_by_mode", "unreadable": [paths]} for every image file under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root}: no such directory")
    by_mode: collections.Counter = collections.Counter()
    differ: collections.Counter = collections.Counter()
    unreadable = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES):
        try:
            with Image.open(path) as img:  # the header alone: mode and size
                mode, (w, h) = img.mode, img.size
        except (UnidentifiedImageError, OSError):
            unreadable.append(str(path))
            continue
        by_mode[mode] += 1
        if w != h and mode not in SAME:
            differ[mode] += 1
    return {
        "images": sum(by_mode.values()),
        "by_mode": dict(sorted(by_mode.items())),
        "differ": sum(differ.values()),
        "differ_by_mode": dict(sorted(differ.items())),
        "unreadable": unreadable,
    }


@cli
def main(argv: list[str]) -> int:
    p = ArgumentParser(
        prog="python -m vlguard_jax.evaluate.helpfulness.image_modes", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("dir", help="an image folder (e.g. ScienceQA's test images)")
    a = p.parse_args(argv)
    print(json.dumps(count_modes(a.dir), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
