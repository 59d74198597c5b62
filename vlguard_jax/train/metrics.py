"""Run logging, on process 0 only: a tqdm bar, `workdir/metrics.jsonl`, TensorBoard events."""

from __future__ import annotations

import json
from pathlib import Path

import jax
from tensorboardX import SummaryWriter
from tqdm import tqdm

from vlguard_jax import storage


class Logger:
    def __init__(self, workdir, total_steps: int, start_step: int):
        self.main = jax.process_index() == 0
        if not self.main:
            return

        # In a bucket the appended files live in a local mirror, copied up after every write.
        self.mirror = storage.mirror_for(workdir) if storage.is_remote(workdir) else None
        if self.mirror is not None:
            self.mirror.pull(["metrics.jsonl", "tensorboard"])
        local = self.mirror.local if self.mirror is not None else Path(workdir)
        self.jsonl = open(local / "metrics.jsonl", "a")
        self.tb = SummaryWriter(str(local / "tensorboard"))
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def advance(self, steps: int = 1) -> None:
        if self.main:
            self.bar.update(steps)

    def write(self, step: int, metrics: dict) -> None:
        if not self.main:
            return
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.tb.add_scalar(f"train/{k}", v, step)
        self.tb.flush()
        if self.mirror is not None:
            self.mirror.sync()
        self.bar.set_postfix(
            loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}", tok_s=f"{metrics['tokens_per_s']:.0f}"
        )

    def close(self) -> None:
        if self.main:
            self.bar.close()
            self.jsonl.close()
            self.tb.close()
            if self.mirror is not None:
                self.mirror.sync()
