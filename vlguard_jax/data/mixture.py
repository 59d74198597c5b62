"""Training mixtures, chosen by the config (`data.recipe`), never by code:

- `posthoc`: VLGuard train + `helpful_samples` rows (default 5000) drawn with `helpful_seed`
  from a LLaVA-format file, on top of a finished LLaVA;
- `mixed`: VLGuard train appended to the whole LLaVA mix (665k);
- `vlguard`: VLGuard train alone; `llava`: the LLaVA file alone (e.g. the demo's stage 1).

Each example is a LLaVA-format record plus `source` (an index into `Mixture.sources`), which
says which image root its `image` path is relative to. The LLaVA file of `mixed` and `llava` is
streamed (`Streamed`): a 665k mix is read record by record, on each pass, never held whole; the
post-hoc draw reads it twice (the valid rows, then the drawn ones).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from vlguard_jax.data.config import DataConfig
from vlguard_jax.data.conversation import image_tags
from vlguard_jax.data.convert_vlguard import to_llava
from vlguard_jax.data.records import (
    RecordError,
    iter_json_list,
    load_json_list,
    record_label,
    validate_llava,
    validate_vlguard,
)
from vlguard_jax.errors import ConfigError

RECIPES = ("posthoc", "mixed", "vlguard", "llava")


@dataclasses.dataclass(frozen=True)
class Source:
    name: str
    path: str
    image_root: str


class Streamed:
    """A LLaVA-format file's valid records, read anew on each pass. Bad records raise, or are
    reported through `bad` and left out (on the first pass only)."""

    def __init__(self, path, bad=None):
        self.path, self.bad, self._reported = path, bad, False

    def __iter__(self):
        report, self._reported = not self._reported, True
        for i, r in enumerate(iter_json_list(self.path)):
            try:
                yield image_tags(validate_llava(r, self.path, i))
            except RecordError as e:
                if self.bad is None or self.bad.mode == "raise":
                    raise
                if report:
                    self.bad.report(record_label(self.path, i, r), str(e))


class Records:
    """The mixture's examples, source by source, each a record plus its `source` index; iterable
    as often as needed."""

    def __init__(self, parts: list):
        self.parts = parts

    def __iter__(self):
        for s, part in enumerate(self.parts):
            for r in part:
                yield dict(r, source=s)


def count(c: collections.Counter, r: dict) -> None:
    """Count one record into its source's composition."""
    c["total"] += 1
    if "safe" in r:
        c["safe" if r["safe"] else "unsafe"] += 1
    if "image" not in r:
        c["text_only"] += 1
    if "image_tags" in r:  # see conversation.image_tags
        c[r["image_tags"]] += 1


def composition(records, sources: list[Source]) -> dict:
    """{source: {"total", "safe", "unsafe", "text_only", and each kind of `image_tags`}}; `safe`
    counts VLGuard's flag only."""
    out = {s.name: collections.Counter() for s in sources}
    for r in records:
        count(out[sources[r["source"]].name], r)
    return {k: dict(v) for k, v in out.items()}


def describe(counts: dict) -> str:
    lines = [f"data mixture: {sum(c.get('total', 0) for c in counts.values())} examples"]
    for name, c in counts.items():
        extra = ", ".join(f"{k} {v}" for k, v in c.items() if k != "total")
        lines.append(f"  {name}: {c.get('total', 0)}" + (f" ({extra})" if extra else ""))
    return "\n".join(lines)


def check_nonempty(counts: dict, sources: list[Source], recipe: str, skipping: bool) -> None:
    """A source with no records (left) is an error: an empty VLGuard file would train the
    post-hoc recipe on helpfulness rows alone."""
    for source in sources:
        if not counts.get(source.name, {}).get("total"):
            raise RecordError(
                f"{source.path}: no records to train on (data.{source.name}, which the {recipe} "
                "recipe needs)" + (" after skipping bad ones" if skipping else "")
            )


@dataclasses.dataclass
class Mixture:
    sources: list[Source]
    records: Records
    recipe: str = "posthoc"

    def composition(self) -> dict:
        return composition(self.records, self.sources)

    def describe(self) -> str:
        return describe(self.composition())


def _valid(records, validate, path, bad) -> list[dict]:
    """Validated records; a bad one raises, or is reported by `bad` (see store.BadRecords) and left out."""
    out = []
    for i, r in enumerate(records):
        try:
            out.append(validate(r, path, i))
        except RecordError as e:
            if bad is None or bad.mode == "raise":
                raise
            bad.report(record_label(path, i, r), str(e))
    return out


def load_vlguard_as_llava(path, seed: int = 0, bad=None) -> list[dict]:
    """VLGuard metadata converted by the authors' rule; an already converted file passes through.
    Skipped bad records are left out before conversion, so the rest see the authors' stream."""
    records = load_json_list(path)
    if records and isinstance(records[0], dict) and "instr-resp" in records[0]:
        return to_llava(_valid(records, validate_vlguard, path, bad), seed)
    return [image_tags(r) for r in _valid(records, validate_llava, path, bad)]


def draw_helpful(records, n: int, seed: int, path="<llava>") -> list[dict]:
    """`n` rows without replacement, by a seeded permutation of the valid rows, in drawn order.
    Two passes over `records` (a list or `Streamed`), holding only the drawn rows."""
    count = sum(1 for _ in records)
    if n > count:
        raise RecordError(f"{path}: asked for {n} helpfulness samples but the file has {count}")
    idx = np.random.default_rng(seed).permutation(count)[:n]
    rank = {int(i): k for k, i in enumerate(idx)}
    drawn: list = [None] * n
    for i, r in enumerate(records):
        if i in rank:
            drawn[rank[i]] = r
    return drawn


def sources_of(data_cfg: DataConfig) -> list[Source]:
    """The files the recipe reads, in the mixture's order."""
    if data_cfg.recipe not in RECIPES:
        raise ConfigError(f"data.recipe {data_cfg.recipe!r} is not one of {RECIPES}")
    out = []
    if data_cfg.recipe != "llava":
        out.append(Source("vlguard", data_cfg.vlguard, data_cfg.vlguard_images))
    if data_cfg.recipe != "vlguard":
        out.append(Source("llava", data_cfg.llava, data_cfg.llava_images))
    return out


def build(data_cfg: DataConfig, bad=None) -> Mixture:
    """From the config's `data` block: recipe, vlguard/vlguard_images, llava/llava_images,
    helpful_samples, helpful_seed, convert_seed. `bad`: None raises on a bad record."""
    recipe = data_cfg.recipe
    sources, parts = sources_of(data_cfg), []
    for source in sources:
        if source.name == "vlguard":
            parts.append(load_vlguard_as_llava(data_cfg.vlguard, data_cfg.convert_seed, bad))
            continue
        rows = Streamed(data_cfg.llava, bad)
        if recipe == "posthoc":
            rows = draw_helpful(rows, data_cfg.helpful_samples, data_cfg.helpful_seed, data_cfg.llava)
        parts.append(rows)
    skipping = bad is not None and bad.mode == "skip"
    check_nonempty(
        {s.name: {"total": len(p)} for s, p in zip(sources, parts) if isinstance(p, list)},
        [s for s, p in zip(sources, parts) if isinstance(p, list)],
        recipe,
        skipping,
    )
    return Mixture(sources, Records(parts), recipe)
