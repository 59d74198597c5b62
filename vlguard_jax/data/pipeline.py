"""The grain input pipeline: tokenized store -> per-epoch order -> this process's rows -> pixels
-> fixed-shape batches.

- The order of epoch `e` is a pure function of (seed, e): a permutation, or LLaVA's
  group-by-modality-length order (megabatches of one global batch, each all-image or all-text,
  sorted by length inside, megabatch order shuffled, the leftovers last).
- Epochs are laid end to end and cut into global batches; the last batch of the run is filled
  with padding rows (no labels), so no sample is dropped and every batch has the same shape.
- Process p of P reads rows [p*B/P, (p+1)*B/P) of every global batch and nothing else.
- `pad_to="max_length"` pads every row to `max_length`; `"bucket"` pads a batch to its longest
  row rounded up to a multiple of `bucket` (computed over the global batch, so all processes agree).
- Images are decoded in grain worker processes; a bad image raises, or with
  `on_bad_record="skip"` becomes a padding row and a line in the report.
- The iterator is grain's: `get_state()`/`set_state()` resume at exactly the next batch.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import time
from collections.abc import Sequence
from typing import cast

import grain
import numpy as np

from vlguard_jax import storage
from vlguard_jax.data import mixture, tokenization
from vlguard_jax.data.config import AUTO_TEMPLATE, DataConfig
from vlguard_jax.data.images import MAX_PIXELS, ImageError, ImageInput
from vlguard_jax.data.llava_tokens import Encoder
from vlguard_jax.data.records import RecordError
from vlguard_jax.data.store import BadRecords, TokenStore, build_store
from vlguard_jax.data.tokenization import IGNORE
from vlguard_jax.errors import ConfigError, InputError
from vlguard_jax.storage.files import download_dir, sha256_file


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """What the data side needs of a model, said by its family (`Family.model_inputs`): how a
    record becomes tokens (`encoder`, the family's training encoding), the id its image tokens
    carry, how an image becomes its pixels and how many tokens it takes (`image`), and its
    default training template."""

    encoder: type[Encoder]
    image_token_index: int
    image: ImageInput
    template: str  # what data.template `auto` means: the family's first training template


@dataclasses.dataclass(frozen=True)
class Layout:
    """Everything that fixes the order and shape of the batches."""

    global_batch: int
    epochs: int
    seed: int = 0
    max_length: int = 2048
    pad_to: str = "max_length"  # or "bucket"
    bucket: int = 64
    group_by_modality: bool = False
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if self.global_batch % self.process_count:
            raise ConfigError(f"global batch {self.global_batch} does not split over {self.process_count} processes")
        if self.pad_to not in ("max_length", "bucket"):
            raise ConfigError(f"data.pad_to must be 'max_length' or 'bucket', not {self.pad_to!r}")

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.process_count


def steps_for(n_examples: int, layout: Layout) -> int:
    return math.ceil(n_examples * layout.epochs / layout.global_batch)


def epoch_order(lengths: np.ndarray, has_image: np.ndarray, layout: Layout, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([layout.seed, epoch])
    if not layout.group_by_modality:
        return rng.permutation(len(lengths))
    mega = layout.global_batch
    batches, leftovers = [], []
    for group in (np.flatnonzero(has_image), np.flatnonzero(~has_image)):
        group = group[rng.permutation(len(group))]
        chunks = [group[i : i + mega] for i in range(0, len(group), mega)]
        if chunks and len(chunks[-1]) < mega:
            leftovers.append(chunks.pop())
        batches += [c[np.argsort(-lengths[c], kind="stable")] for c in chunks]
    batches = [batches[i] for i in rng.permutation(len(batches))]
    if leftovers:
        batches.append(np.sort(np.concatenate(leftovers)))
    return np.concatenate(batches) if batches else np.zeros(0, np.int64)


class Rows:
    """This process's rows, in order; item k is one padded row. Picklable (workers reopen the store)."""

    def __init__(
        self,
        store_dir,
        image_roots,
        image: ImageInput,
        pad_image: bool,
        layout: Layout,
        bad: BadRecords,
        max_pixels: int = MAX_PIXELS,
    ):
        self.store_dir, self.image_roots, self.image = str(store_dir), list(image_roots), image
        self.pad_image, self.layout, self.bad, self.max_pixels = pad_image, layout, bad, max_pixels

    @functools.cached_property
    def store(self) -> TokenStore:
        return TokenStore(self.store_dir)

    @property
    def steps(self) -> int:
        return steps_for(len(self.store), self.layout)

    def with_epochs(self, epochs: int) -> Rows:
        """The same rows over another number of epochs, sharing the loaded store."""
        new = object.__new__(Rows)  # not copy.copy: __getstate__ drops the store for pickling
        new.__dict__.update(self.__dict__)
        new.layout = dataclasses.replace(self.layout, epochs=epochs)
        new.__dict__.pop("_orders", None)
        new.__dict__.pop("_length", None)
        return new

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("store", None)
        state.pop("_orders", None)
        state.pop("_length", None)
        return state

    def __len__(self) -> int:
        return self.steps * self.layout.local_batch

    def _order(self, epoch: int) -> np.ndarray:
        orders = self.__dict__.setdefault("_orders", {})
        if epoch not in orders:
            orders.clear()
            orders[epoch] = epoch_order(self.store.lengths, self.store.has_image, self.layout, epoch)
        return orders[epoch]

    def example_at(self, position: int) -> int:
        """Example index at a global stream position, or -1 past the end of the last epoch."""
        n = len(self.store)
        if position >= n * self.layout.epochs:
            return -1
        return int(self._order(position // n)[position % n])

    def batch_length(self, step: int) -> int:
        lay = self.layout
        if lay.pad_to == "max_length":
            return lay.max_length
        cached = self.__dict__.get("_length")
        if cached and cached[0] == step:
            return cached[1]
        idx = [self.example_at(step * lay.global_batch + r) for r in range(lay.global_batch)]
        longest = max([int(self.store.lengths[i]) for i in idx if i >= 0] or [1])
        self._length = (step, min(lay.max_length, -(-longest // lay.bucket) * lay.bucket))
        return self._length[1]

    def batch_room(self, step: int) -> int:
        """The image input slots of a batch: the most any of its images fills (over the global
        batch, so all processes agree); 0 for a fixed-shape rule."""
        if not self.image.rule.varies:
            return 0
        cached = self.__dict__.get("_room")
        if cached and cached[0] == step:
            return cached[1]
        lay = self.layout
        idx = [self.example_at(step * lay.global_batch + r) for r in range(lay.global_batch)]
        runs = [int(self.store.runs[i]) for i in idx if i >= 0 and self.store.has_image[i]]
        self._room = (step, max([self.image.rule.room(n) for n in runs] or [0]))
        return self._room[1]

    def __getitem__(self, k: int) -> dict:
        """One row: its ids and labels padded to the batch's length, its image input widened to
        the batch's room (a row without an image takes the rule's blank)."""
        lay = self.layout
        step, row = divmod(k, lay.local_batch)
        i = self.example_at(step * lay.global_batch + lay.process_index * lay.local_batch + row)
        row_out = self._row(i, self.batch_length(step))
        row_out["pixel_values"] = self.image.rule.widen(row_out["pixel_values"], self.batch_room(step))
        return row_out

    def _row(self, i: int, length: int) -> dict:
        ids = np.zeros(length, np.int32)
        labels = np.full(length, IGNORE, np.int32)
        pixels = self.image.rule.blank((), self.image.channels)  # a row without an image
        if i >= 0:
            x, y = self.store.example(i)
            if self.store.has_image[i]:
                src = int(self.store.source[i])
                try:
                    pixels = self.image.load(
                        self.image_roots[src], self.store.images[i], self.pad_image, max_pixels=self.max_pixels
                    )
                except ImageError as e:
                    self.bad(f"record {self.store.names[i]!r}", str(e), ImageError)
                    return {"input_ids": ids, "labels": labels, "pixel_values": pixels}
            ids[: len(x)], labels[: len(y)] = x, y
        return {"input_ids": ids, "labels": labels, "pixel_values": pixels}


def dataset(rows: Rows, workers: int = 0, prefetch: int = 2) -> grain.IterDataset:
    """Batches of this process's rows as numpy dicts; iterate it, and checkpoint the iterator."""
    source = cast(Sequence, rows)  # grain's protocol: len and getitem, which Rows has
    ds = grain.MapDataset.source(source).batch(rows.layout.local_batch, drop_remainder=True)
    it = ds.to_iter_dataset()
    if workers > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch))
    return it


STORE_VERSION = 3  # raise when the store's format or the tokenization rule changes
STORE_WAIT_S = 4 * 3600


def tokenizer_digest(tokenizer) -> str:
    """What a tokenizer does, as a hash: the whole Rust tokenizer for a fast one, else its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    extra = json.dumps(
        [type(tokenizer).__name__, tokenizer.bos_token_id, getattr(tokenizer, "eos_token_id", None)]
        + ([rule] if (rule := tokenization.rule_of(tokenizer)) else [])
    )
    return hashlib.sha256((text + extra).encode()).hexdigest()


def store_key(data_cfg: DataConfig, tokenizer, inputs: ModelInputs, sources) -> str:
    """The store's name: a hash of the data files' contents, the tokenizer and every setting the
    tokens depend on. An unchanged run finds its store; any change builds another."""
    settings = {
        k: getattr(data_cfg, k)
        for k in (
            "recipe",
            "helpful_samples",
            "helpful_seed",
            "convert_seed",
            "max_length",
            "template",
            "on_bad_record",
        )
    }
    settings.update(
        version=STORE_VERSION,
        image_token_index=inputs.image_token_index,
        num_image_tokens=inputs.image.tokens,
        **({"image_rule": repr(inputs.image.rule)} if inputs.image.rule.varies else {}),
        roots=[storage.root_identity(s.image_root) for s in sources],
        data=[sha256_file(s.path) for s in sources],
        tokenizer=tokenizer_digest(tokenizer),
    )
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def prepare(data_cfg: DataConfig, tokenizer, inputs: ModelInputs, workdir, layout: Layout, log=print) -> Rows:
    """The `data` settings -> the token store (built once, by process 0, or found) -> rows.

    Reads data.{recipe, vlguard, vlguard_images, llava, llava_images, helpful_samples,
    helpful_seed, max_length, template, pad_image, on_bad_record}. The composition and the drops
    are printed from the store, so a start that finds it says the same."""
    if layout.max_length != data_cfg.max_length:
        raise ValueError(f"layout max_length {layout.max_length} != data.max_length {data_cfg.max_length}")
    if data_cfg.template == AUTO_TEMPLATE:
        data_cfg = dataclasses.replace(data_cfg, template=inputs.template)
    remote = storage.is_remote(workdir)
    workdir = storage.as_path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # In a bucket, workers append bad records to a local mirror (one file per process).
    bad_name = (
        "bad_records.jsonl" if not remote or layout.process_index == 0 else f"bad_records.{layout.process_index}.jsonl"
    )
    mirror = storage.mirror_for(workdir) if remote else None
    if mirror is not None:
        mirror.pull([bad_name])
    bad = BadRecords((mirror.local if mirror is not None else workdir) / bad_name, data_cfg.on_bad_record)
    sources = mixture.sources_of(data_cfg)
    for s in sources:
        if not storage.as_path(s.path).is_file():
            raise RecordError(f"{s.path}: cannot read (no such file; data.{s.name})")
    roots = [storage.unpacked(s.image_root) for s in sources]
    key = store_key(data_cfg, tokenizer, inputs, sources)
    store_dir = workdir / "data_store" / key
    # Workers memory-map the store: with a bucket workdir, each host keeps a local copy of it.
    local_dir = storage.local_cache(workdir, "data_store") / key if remote else store_dir
    if (local_dir / "meta.json").exists():
        log(f"token store {local_dir} found: not tokenizing again")
    elif remote and storage.is_complete(store_dir):
        download_dir(store_dir, local_dir)
        log(f"token store {store_dir} found: copied to {local_dir}, not tokenizing again")
    elif layout.process_index == 0:
        enc = inputs.encoder(
            tokenizer, inputs.image_token_index, inputs.image.tokens, data_cfg.max_length, data_cfg.template
        )
        build_store(
            mixture.build(data_cfg, bad), enc, local_dir, roots, bad, image=inputs.image, pad=data_cfg.pad_image
        )
        if remote:
            storage.upload_dir(local_dir, store_dir)
    else:
        ready = (lambda: storage.is_complete(store_dir)) if remote else (lambda: (store_dir / "meta.json").exists())
        _wait_for(store_dir, log, ready)
        if remote:
            download_dir(store_dir, local_dir)  # unless a process on this host has copied it
    if mirror is not None:
        mirror.sync()
    store_dir = local_dir
    rows = Rows(store_dir, roots, inputs.image, data_cfg.pad_image, layout, bad, data_cfg.max_image_pixels)
    store = rows.store
    log(mixture.describe(store.composition))
    drops = store.drops
    log(
        f"tokenized: {len(store)} examples kept"
        + ("; dropped " + ", ".join(f"{v} ({k})" for k, v in sorted(drops.items())) if drops else ", none dropped")
    )
    truncated = store.truncated
    if truncated:
        detail = "".join(f", {k} {v}" for k, v in truncated.items() if k != "at max_length")
        log(f"truncated at max_length: {truncated.get('at max_length', 0)} (kept, as LLaVA does{detail})")
    if bad.mode == "skip":
        log(f"bad records skipped so far: {len(bad.entries())} (listed in {bad.path})")
    if len(store) == 0:
        raise InputError("no training examples left after tokenization; see the drop counts above")
    return rows


def _wait_for(store_dir, log, ready) -> None:
    """The other processes wait for process 0's store (shared storage, as the checkpoints)."""
    log(f"waiting for process 0 to build the token store {store_dir}")
    deadline = time.monotonic() + STORE_WAIT_S
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{store_dir}: process 0 built no token store in {STORE_WAIT_S} s; is the "
                "workdir on storage every process sees?"
            )
        time.sleep(2)
