"""Tokenized examples on disk, memory-mapped by every data worker.

The whole mixture is tokenized once, in the main process, before training: drops are counted
there (never silently) and exact lengths are known for bucketing. Image runs are stored as one
`image_token_index` and expanded when a row is loaded, so 665k samples stay small.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vlguard_jax.data.images import ImageError, resolve
from vlguard_jax.data.records import RecordError
from vlguard_jax.data.tokenize import IGNORE, TokenizationError

STORE_FILES = ("ids.npy", "supervised.npy", "offsets.npy", "source.npy", "meta.json")


class BadRecords:
    """`on_bad_record`: "raise" raises; "skip" appends one JSON line per bad record to `path` and
    counts it. Picklable, so data workers report into the same file."""

    def __init__(self, path, mode: str = "raise"):
        if mode not in ("raise", "skip"):
            raise ValueError(f"data.on_bad_record must be 'raise' or 'skip', not {mode!r}")
        self.path, self.mode = (str(path) if path else None), mode

    def __call__(self, where: str, reason: str, exc_type=RecordError) -> None:
        if self.mode == "raise":
            raise exc_type(f"{where}: {reason}")
        self.report(where, reason)

    def report(self, where: str, reason: str) -> None:
        if self.path:
            line = json.dumps({"record": where, "reason": reason}) + "\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())  # one O_APPEND write: lines from workers never interleave
            finally:
                os.close(fd)

    def entries(self) -> list[dict]:
        if not self.path or not Path(self.path).exists():
            return []
        seen = {}
        for line in Path(self.path).read_text().splitlines():
            e = json.loads(line)
            seen.setdefault(e["record"], e)  # a resumed run may meet the same bad record again
        return list(seen.values())


def build_store(mixture, encoder, dst, image_roots, bad: BadRecords, check_images: bool = True) -> dict:
    """Tokenize every record into `dst`; returns the drop counts. With `check_images`, each image
    path is resolved under its root and must exist (decoding happens later, in the workers)."""
    n_img, img_id = encoder.num_image_tokens, encoder.image_token_index
    ids, sup, offsets, source, images, names = [], [], [0], [], [], []
    skipped = 0
    for r in tqdm(mixture.records, desc="tokenizing", unit="sample", mininterval=2, leave=False):
        where = f"{mixture.sources[r['source']].path}: record {r.get('id')!r}"
        if "image" in r and check_images:
            try:
                path = resolve(image_roots[r["source"]], r["image"])
                if not path.is_file():
                    raise ImageError(f"{path}: image file not found")
            except ImageError as e:
                bad(where, str(e), ImageError)
                skipped += 1
                continue
        try:
            out = encoder(r, where)
        except TokenizationError as e:
            if bad.mode == "raise":
                raise
            bad.report(where, e.reason)
            skipped += 1
            continue
        if out is None:
            continue
        x, s = out["input_ids"], out["labels"] != IGNORE
        keep = np.ones(len(x), bool)
        pos = np.flatnonzero(x == img_id)
        if len(pos):
            keep[pos[1:]] = False  # one marker per image run
            if len(pos) != n_img:
                raise RecordError(f"{where}: {len(pos)} image tokens, expected {n_img}")
        ids.append(x[keep])
        sup.append(s[keep])
        offsets.append(offsets[-1] + int(keep.sum()))
        source.append(r["source"])
        images.append(r.get("image", ""))
        names.append(str(r.get("id")))
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    np.save(dst / "ids.npy", cat(ids, np.int32))
    np.save(dst / "supervised.npy", cat(sup, bool))
    np.save(dst / "offsets.npy", np.asarray(offsets, np.int64))
    np.save(dst / "source.npy", np.asarray(source, np.int16))
    drops = dict(encoder.drops)
    if skipped:
        drops["bad record skipped"] = skipped
    (dst / "meta.json").write_text(json.dumps({"images": images, "ids": names, "drops": drops,
                                               "num_image_tokens": n_img, "image_token_index": img_id}))
    return drops


class TokenStore:
    """Read side of `build_store`; arrays are memory-mapped."""

    def __init__(self, path):
        self.path = Path(path)
        self.ids = np.load(self.path / "ids.npy", mmap_mode="r")
        self.supervised = np.load(self.path / "supervised.npy", mmap_mode="r")
        self.offsets = np.load(self.path / "offsets.npy")
        self.source = np.load(self.path / "source.npy")
        meta = json.loads((self.path / "meta.json").read_text())
        self.images, self.names, self.drops = meta["images"], meta["ids"], meta["drops"]
        self.num_image_tokens, self.image_token_index = meta["num_image_tokens"], meta["image_token_index"]
        has_image = np.array([bool(i) for i in self.images], bool)
        self.lengths = np.diff(self.offsets) + has_image * (self.num_image_tokens - 1)
        self.has_image = has_image

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, labels) with the image run expanded."""
        a, b = self.offsets[i], self.offsets[i + 1]
        x, s = np.asarray(self.ids[a:b]), np.asarray(self.supervised[a:b])
        if self.has_image[i]:
            reps = np.where(x == self.image_token_index, self.num_image_tokens, 1)
            x, s = np.repeat(x, reps), np.repeat(s, reps)
        return x, np.where(s, x, IGNORE).astype(np.int32)
