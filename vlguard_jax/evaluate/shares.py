"""Each process's share of an evaluation on several hosts (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID, as training; TPU pods detect themselves).

Process p of P answers a contiguous slice of the questions on its own devices (its `--mesh`), into
its own part beside the output, `<stem>.part-<p>-of-<P><suffix>`, written as it goes. Once every
process is done, the first merges the parts into the output in question order and removes them.
A resume, with any number of processes, takes every answer in the output or in any part, so an
interruption loses at most a batch per process. With one process the part is the output itself.

The output's folder is shared by the processes (a bucket, or a shared file system). A process that
fails leaves the others waiting at the next barrier until JAX's coordination service notices.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from vlguard_jax import storage

T = TypeVar("T")
PART = re.compile(r"\.part-(\d+)-of-(\d+)$")


@dataclasses.dataclass(frozen=True)
class Share:
    """Which slice of the work this process takes: process `index` of `count`."""

    index: int = 0
    count: int = 1

    @classmethod
    def current(cls) -> Share:
        return cls(jax.process_index(), jax.process_count())

    @property
    def lead(self) -> bool:
        """The process that merges, scores and writes summaries."""
        return self.index == 0

    def of(self, items: Sequence[T]) -> list[T]:
        """This process's contiguous slice of `items` (the whole list with one process)."""
        n = len(items)
        return list(items[self.index * n // self.count : (self.index + 1) * n // self.count])

    def part(self, path: Path) -> Path:
        """Where this process writes its answers: `path` itself with one process."""
        if self.count == 1:
            return path
        return path.with_name(f"{path.stem}.part-{self.index}-of-{self.count}{path.suffix}")

    def barrier(self, what: str) -> None:
        if self.count > 1:
            multihost_utils.sync_global_devices(f"vlguard_jax: {what}")

    def gather(self, rows: list[list[int]], total: int) -> list[list[int]] | None:
        """Every process's `rows` (token ids, its slice of `total`), in order, on the lead process;
        None on the others. Every process calls it."""
        if self.count == 1:
            return rows
        per = -(-total // self.count)
        width = max([len(r) for r in rows] + [0])
        width = int(multihost_utils.process_allgather(np.asarray(width)).max())
        block = np.full((per, width + 1), -1, np.int64)  # column 0: the row's length
        for i, r in enumerate(rows):
            block[i, 0] = len(r)
            block[i, 1 : len(r) + 1] = r
        every = np.asarray(multihost_utils.process_allgather(block))  # [count, per, width + 1]
        if not self.lead:
            return None
        out = []
        for p in range(self.count):
            mine = Share(p, self.count).of(range(total))
            out += [every[p, i, 1 : 1 + every[p, i, 0]].tolist() for i in range(len(mine))]
        return out


def parts(path: Path) -> list[Path]:
    """Every part of `path` there is, from any process count (an interrupted run's included)."""
    folder = storage.as_path(path).parent
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = PART.search(p.name[: len(p.name) - len(path.suffix)]) if p.name.endswith(path.suffix) else None
        if m and p.name[: m.start()] == path.stem:
            found.append(p)
    return sorted(found, key=lambda p: p.name)


def saved(path: Path, read: Callable[[Path], dict]) -> dict:
    """The answers in `path` and in every part of it, keyed as `read` keys them."""
    out = dict(read(path))
    for p in parts(path):
        out.update(read(p))
    return out


def merge(
    share: Share,
    path: Path,
    order: Sequence[Hashable],
    read: Callable[[Path], dict],
    write: Callable[[Path, dict], Any],
) -> dict:
    """Once every process has answered: the lead writes `path` from it and its parts, the keys of
    `order` first and in that order (any others after, as they were), then removes the parts.
    Returns the merged answers on every process."""
    share.barrier(f"{path.name}: every share answered")
    if share.lead:
        found = parts(path)
        every = saved(path, read)
        wanted = set(order)
        merged = {k: every[k] for k in order if k in every} | {k: v for k, v in every.items() if k not in wanted}
        if found or list(read(path)) != list(merged):
            write(path, merged)
        for p in found:
            p.unlink()
    share.barrier(f"{path.name}: merged")
    return read(path)
