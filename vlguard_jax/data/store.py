"""Tokenized examples on disk, memory-mapped by every data worker.

The whole mixture is tokenized once, before training, by one process: drops are counted there
(never silently) and exact lengths are known for bucketing. Records stream through in batches
and their tokens go straight to disk. Image runs are stored as one `image_token_index` and
expanded when a row is loaded, so 665k samples stay small. `pipeline.prepare` names each store
by a hash of what it is made of and reuses it on every start that has the same inputs.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vlguard_jax import storage
from vlguard_jax.data.images import ImageError, ImageInput, image_size, resolve
from vlguard_jax.data.mixture import check_nonempty
from vlguard_jax.data.mixture import count as mixture_count
from vlguard_jax.data.records import RecordError
from vlguard_jax.data.tokenization import IGNORE, TokenizationError
from vlguard_jax.errors import ConfigError
from vlguard_jax.storage.files import atomic_dir

STORE_FILES = ("ids.bin", "supervised.bin", "offsets.npy", "source.npy", "meta.json")


class BadRecords:
    """`on_bad_record`: "raise" raises; "skip" appends one JSON line per bad record to `path` and
    counts it. Picklable, so data workers report into the same file."""

    def __init__(self, path, mode: str = "raise"):
        if mode not in ("raise", "skip"):
            raise ConfigError(f"data.on_bad_record must be 'raise' or 'skip', not {mode!r}")
        self.path, self.mode = (str(path) if path else None), mode

    def __call__(self, where: str, reason: str, exc_type: type[ValueError] = RecordError) -> None:
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


class _Writer:
    """Appends examples' ids and supervision flags to raw files as they come, so that a 665k mix
    never sits in memory whole."""

    def __init__(self, dst: Path):
        self.ids, self.sup = open(dst / "ids.bin", "wb"), open(dst / "supervised.bin", "wb")
        self.offsets, self.source, self.images, self.names, self.runs = [0], [], [], [], []

    def add(self, x: np.ndarray, s: np.ndarray, record: dict, run: int) -> None:
        """One example, its image run stored as one marker of `run` tokens."""
        self.runs.append(run)
        self.ids.write(np.ascontiguousarray(x, np.int32).tobytes())
        self.sup.write(np.ascontiguousarray(s, np.bool_).tobytes())
        self.offsets.append(self.offsets[-1] + len(x))
        self.source.append(record["source"])
        self.images.append(record.get("image", ""))
        self.names.append(str(record.get("id")))

    def close(self, dst: Path) -> None:
        self.ids.close()
        self.sup.close()
        np.save(dst / "offsets.npy", np.asarray(self.offsets, np.int64))
        np.save(dst / "source.npy", np.asarray(self.source, np.int16))
        np.save(dst / "image_run.npy", np.asarray(self.runs, np.int32))


def build_store(
    mixture,
    encoder,
    dst,
    image_roots,
    bad: BadRecords,
    check_images: bool = True,
    batch: int = 512,
    image: ImageInput | None = None,
    pad: bool = False,
) -> dict:
    """Tokenize every record into `dst` (written beside it, renamed when complete); returns the
    drop counts. With `check_images`, each image path is resolved under its root and must exist
    (decoding happens later, in the workers). Where the model's images differ in shape (`image`'s
    rule varies), each image's size is read from its header and the record takes the tokens of
    its shape class (`image_tokens`); the store records every example's count. The mixture's
    composition is counted on the way and saved, and a source left without records is an error."""
    n_img, img_id = encoder.num_image_tokens, encoder.image_token_index
    dst = Path(dst)
    counts = {src.name: collections.Counter() for src in mixture.sources}
    skipped = 0
    with atomic_dir(dst, overwrite=True) as tmp:
        out = _Writer(tmp)

        def write(pending, encoded):
            nonlocal skipped
            for (r, where), result in zip(pending, encoded.result()):
                if isinstance(result, TokenizationError):
                    if bad.mode == "raise":
                        raise result
                    bad.report(where, result.reason)
                    skipped += 1
                    continue
                if result is None:
                    continue
                x, s = result["input_ids"], result["labels"] != IGNORE
                keep = np.ones(len(x), bool)
                pos = np.flatnonzero(x == img_id)
                if len(pos):
                    keep[pos[1:]] = False  # one marker per image run
                    # fewer only where max_length cut the run, at the end (LLaVA keeps such samples)
                    n = encoder.image_tokens(r)
                    if len(pos) > n or (len(pos) < n and pos[-1] != len(x) - 1):
                        raise RecordError(f"{where}: {len(pos)} image tokens, expected {n}")
                out.add(x[keep], s[keep], r, len(pos))
                mixture_count(counts[mixture.sources[r["source"]].name], r)

        def batches():
            nonlocal skipped
            pending = []
            listings: dict = {}

            def exists(root, path) -> bool:
                if not storage.is_remote(root):
                    return os.path.isfile(path)
                if root not in listings:  # one listing per bucket root, not one request per image
                    listings[root] = {str(p) for _, p in storage.walk_files(root)}
                return str(path) in listings[root]

            for r in tqdm(mixture.records, desc="tokenizing", unit="sample", mininterval=2, leave=False):
                where = f"{mixture.sources[r['source']].path}: record {r.get('id')!r}"
                if "image" in r and check_images:
                    try:
                        path = resolve(image_roots[r["source"]], r["image"])
                        if not exists(image_roots[r["source"]], path):
                            raise ImageError(f"{path}: image file not found")
                        if image is not None and image.rule.varies:
                            key = image.rule.key(*image_size(path), pad)
                            r = dict(r, image_tokens=image.tokens_for(key))
                    except ImageError as e:
                        bad(where, str(e), ImageError)
                        skipped += 1
                        continue
                pending.append((r, where))
                if len(pending) == batch:
                    yield pending
                    pending = []
            if pending:
                yield pending

        # One batch is tokenized in a thread (the tokenizer's native code lets go of the GIL)
        # while this one reads and checks the next batch's records and writes the last one's.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            previous = None
            for pending in batches():
                current = pending, pool.submit(encoder.encode_many, [r for r, _ in pending], [w for _, w in pending])
                if previous:
                    write(*previous)
                previous = current
            if previous:
                write(*previous)
        out.close(tmp)
        composition = {k: dict(v) for k, v in counts.items()}
        check_nonempty(composition, mixture.sources, getattr(mixture, "recipe", "this"), bad.mode == "skip")
        drops = {"bad record skipped": skipped} if skipped else {}
        truncated = dict(encoder.truncated)
        (tmp / "meta.json").write_text(
            json.dumps(
                {
                    "images": out.images,
                    "ids": out.names,
                    "drops": drops,
                    "truncated": truncated,
                    "composition": composition,
                    "tokens": out.offsets[-1],
                    "num_image_tokens": n_img,
                    "image_token_index": img_id,
                }
            )
        )
    return drops


class TokenStore:
    """Read side of `build_store`; arrays are memory-mapped."""

    def __init__(self, path):
        self.path = Path(path)
        meta = json.loads((self.path / "meta.json").read_text())
        n = meta["tokens"]
        self.ids = np.memmap(self.path / "ids.bin", np.int32, "r", shape=(n,)) if n else np.zeros(0, np.int32)
        self.supervised = np.memmap(self.path / "supervised.bin", np.bool_, "r", shape=(n,)) if n else np.zeros(0, bool)
        self.offsets = np.load(self.path / "offsets.npy")
        self.source = np.load(self.path / "source.npy")
        self.images, self.names, self.drops = meta["images"], meta["ids"], meta["drops"]
        self.truncated = meta.get("truncated", {})
        self.composition = meta["composition"]
        self.num_image_tokens, self.image_token_index = meta["num_image_tokens"], meta["image_token_index"]
        has_image = np.array([bool(i) for i in self.images], bool)
        self.runs = np.load(self.path / "image_run.npy")  # image tokens per example (its marker's run)
        self.lengths = np.diff(self.offsets) + np.maximum(self.runs - 1, 0)
        self.has_image = has_image

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, labels) with the image run expanded."""
        a, b = self.offsets[i], self.offsets[i + 1]
        x, s = np.asarray(self.ids[a:b]), np.asarray(self.supervised[a:b])
        if self.runs[i]:
            reps = np.where(x == self.image_token_index, self.runs[i], 1)
            x, s = np.repeat(x, reps), np.repeat(s, reps)
        return x, np.where(s, x, IGNORE).astype(np.int32)
