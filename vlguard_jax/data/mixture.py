"""Training mixtures, chosen by the config (`data.recipe`), never by code:

- `posthoc`: VLGuard train + `helpful_samples` rows (default 5000) drawn with `helpful_seed`
  from a LLaVA-format file, on top of a finished LLaVA;
- `mixed`: VLGuard train appended to the whole LLaVA mix (665k);
- `vlguard`: VLGuard train alone; `llava`: the LLaVA file alone (e.g. the demo's stage 1).

Each example is a LLaVA-format record plus `source` (an index into `Mixture.sources`), which
says which image root its `image` path is relative to.
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np

from vlguard_jax.data.convert_vlguard import to_llava
from vlguard_jax.data.records import (RecordError, load_json_list, record_label, validate_llava,
                                      validate_vlguard)

RECIPES = ("posthoc", "mixed", "vlguard", "llava")


@dataclasses.dataclass(frozen=True)
class Source:
    name: str
    path: str
    image_root: str


@dataclasses.dataclass
class Mixture:
    sources: list[Source]
    records: list[dict]

    def composition(self) -> dict:
        """{source: {"total", "safe", "unsafe", "text_only"}}; `safe` counts VLGuard's flag only."""
        out = collections.defaultdict(collections.Counter)
        for r in self.records:
            c = out[self.sources[r["source"]].name]
            c["total"] += 1
            if "safe" in r:
                c["safe" if r["safe"] else "unsafe"] += 1
            if "image" not in r:
                c["text_only"] += 1
        return {k: dict(v) for k, v in out.items()}

    def describe(self) -> str:
        lines = [f"data mixture: {len(self.records)} examples"]
        for name, c in self.composition().items():
            extra = ", ".join(f"{k} {v}" for k, v in c.items() if k != "total")
            lines.append(f"  {name}: {c['total']}" + (f" ({extra})" if extra else ""))
        return "\n".join(lines)


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
    return _valid(records, validate_llava, path, bad)


def draw_helpful(records: list[dict], n: int, seed: int, path="<llava>") -> list[dict]:
    """`n` rows without replacement, by a seeded permutation, in drawn order."""
    if n > len(records):
        raise RecordError(f"{path}: asked for {n} helpfulness samples but the file has {len(records)}")
    idx = np.random.default_rng(seed).permutation(len(records))[:n]
    return [records[i] for i in idx]


def build(data_cfg, bad=None) -> Mixture:
    """From the config's `data` block: recipe, vlguard/vlguard_images, llava/llava_images,
    helpful_samples, helpful_seed, convert_seed. `bad`: None raises on a bad record."""
    recipe = data_cfg.recipe
    if recipe not in RECIPES:
        raise ValueError(f"data.recipe {recipe!r} is not one of {RECIPES}")
    sources, parts = [], []
    if recipe != "llava":
        sources.append(Source("vlguard", data_cfg.vlguard, data_cfg.vlguard_images))
        parts.append(load_vlguard_as_llava(data_cfg.vlguard, data_cfg.get("convert_seed", 0), bad))
    if recipe != "vlguard":
        rows = load_json_list(data_cfg.llava)
        rows = _valid(rows, validate_llava, data_cfg.llava, bad)
        if recipe == "posthoc":
            rows = draw_helpful(rows, data_cfg.helpful_samples, data_cfg.helpful_seed, data_cfg.llava)
        sources.append(Source("llava", data_cfg.llava, data_cfg.llava_images))
        parts.append(rows)
    for source, part in zip(sources, parts):
        if not part:  # e.g. an empty VLGuard file would train the post-hoc recipe on helpfulness alone
            raise RecordError(f"{source.path}: no records to train on (data.{source.name}, which the {recipe} "
                              "recipe needs)" + (" after skipping bad ones" if bad is not None and bad.mode == "skip"
                                                 else ""))
    records = [dict(r, source=s) for s, part in enumerate(parts) for r in part]
    return Mixture(sources, records)
