"""Training checkpoints with orbax's CheckpointManager: the train state (trainable weights,
optimizer state, step, rng), the data iterator's position, and run metadata (the base
checkpoint, LoRA settings). Saves are asynchronous and atomic: orbax writes to a temporary
directory and renames it on commit (on a filesystem) or writes `commit_success.txt` last (gs://),
so a killed run never leaves a checkpoint that restores.

This orbax writes arrays to filesystems and gs:// only. A run with its workdir in s3:// (one
process) stages checkpoints on local disk and uploads each finished one, `COMPLETE` last
(storage.upload_dir); a start downloads the newest complete one. Reading a workdir's checkpoints
(which steps are finished, the latest state) lives in io.runs, below training.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from vlguard_jax.io import storage
from vlguard_jax.io.files import download_dir
from vlguard_jax.io.runs import CHECKPOINTS, finished_steps, marker, staged


class Checkpoints:
    def __init__(self, workdir, every: int, keep: int):
        self.workdir = workdir
        self.bucket = storage.as_path(workdir) / CHECKPOINTS if staged(workdir) else None
        directory = storage.as_path(workdir) / CHECKPOINTS
        if storage.is_remote(workdir):
            _remove_unfinished(workdir)
        if self.bucket is not None:
            directory = _stage(workdir)
        self.manager = ocp.CheckpointManager(
            storage.absolute(directory),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                save_interval_steps=1,
                create=True,
                cleanup_tmp_directories=True,
                enable_async_checkpointing=True,
            ),
            item_names=("state", "data", "meta"),
        )
        self.every, self.keep = every, keep
        self._published = set(self.manager.all_steps())  # staged: the copy downloaded from the bucket

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict, meta: dict, force: bool = False) -> bool:
        self._publish()
        if not force and (self.every <= 0 or step % self.every):
            return False
        if step in self.manager.all_steps():
            return False
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state):
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()
            ),
        )
        return out["state"], out["data"], out["meta"]

    def saved_stacked(self, step: int) -> bool:
        """Whether checkpoint `step` holds its decoder layers stacked (a run with scanned layers;
        its meta says so, and checkpoints from before scanning have them per layer)."""
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        return bool(meta.get("scan_layers", False))

    def wait(self) -> None:
        self.manager.wait_until_finished()
        self._publish()

    def close(self) -> None:
        self.manager.close()

    def _publish(self) -> None:
        """Upload the staged steps that orbax has finished (and only those), then keep the newest
        `keep` complete steps in the bucket."""
        if self.bucket is None or self.manager.is_saving_in_progress():
            return
        local = storage.as_path(self.manager.directory)
        new = [step for step in self.manager.all_steps() if step not in self._published]
        for step in new:
            storage.upload_dir(local / str(step), self.bucket / str(step))
            self._published.add(step)
        if not new:
            return
        complete = finished_steps(self.workdir)  # in the bucket, with their markers
        for step in complete[: -self.keep] if self.keep > 0 else []:
            storage.rmtree(self.bucket / str(step))


def _stage(workdir) -> Path:
    """This host's staging directory for an s3:// workdir's checkpoints, holding a copy of the
    newest complete one (the bucket is the truth: what an earlier run left here is dropped)."""
    local = storage.local_cache(workdir, "checkpoints")
    shutil.rmtree(local)
    local.mkdir(parents=True)
    steps = finished_steps(workdir)
    if steps:
        download_dir(storage.as_path(workdir) / CHECKPOINTS / str(steps[-1]), local / str(steps[-1]))
    return local


def _remove_unfinished(workdir) -> None:
    """A step a killed run left without its marker is deleted (by process 0, before any process
    saves): a new save of that step must not meet the old one's files."""
    if jax.process_index() == 0:
        root = storage.as_path(workdir) / CHECKPOINTS
        if root.is_dir():
            done = marker(workdir) or ""  # a bucket's: remote workdirs only come here
            for p in root.iterdir():
                if p.name.split(".")[0].isdigit() and not (p / done).exists():
                    storage.rmtree(p)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("vlguard_jax: unfinished checkpoints removed")
