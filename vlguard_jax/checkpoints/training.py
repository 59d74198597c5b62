"""Training checkpoints with orbax's CheckpointManager: the train state (trainable weights,
optimizer state, step, rng), the data iterator's position, and run metadata (the base
checkpoint, LoRA settings). Saves are asynchronous and atomic: orbax writes to a temporary
directory and renames it on commit (on a filesystem) or writes `commit_success.txt` last (gs://
and s3://, see storage.orbax_s3), so a killed run never leaves a checkpoint that restores. In a bucket,
every process writes its own shards of each array. Reading a workdir's checkpoints (which steps
are finished, the latest state) lives in checkpoints.runs, below training.
"""

from __future__ import annotations

from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from vlguard_jax import storage
from vlguard_jax.checkpoints.runs import CHECKPOINTS, RunMeta, finished_steps, is_finished, marker
from vlguard_jax.errors import UserError
from vlguard_jax.storage import orbax_s3


class CheckpointWriteError(UserError):
    """A checkpoint that could not be written (the store failed under the write): the run stops
    there, and a rerun resumes from the last complete one."""


class Checkpoints:
    def __init__(self, workdir, every: int, keep: int):
        if storage.is_remote(workdir):
            _remove_unfinished(workdir)
        self.manager = ocp.CheckpointManager(
            orbax_s3.orbax_path(storage.as_path(workdir) / CHECKPOINTS),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                save_interval_steps=1,
                create=True,
                cleanup_tmp_directories=True,
                enable_async_checkpointing=True,
                temporary_path_class=orbax_s3.TEMPORARY_PATH if orbax_s3.is_s3(workdir) else None,
            ),
            item_names=("state", "data", "meta"),
        )
        self.every = every
        self.workdir = workdir
        self._writing: int | None = None  # the step whose asynchronous write is the latest started
        self._failed: CheckpointWriteError | None = None

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict, meta: RunMeta, force: bool = False) -> bool:
        if not force and (self.every <= 0 or step % self.every):
            return False
        if step in self.manager.all_steps():
            return False
        self.wait()  # orbax waits for the last write before it starts one: its failure is that step's
        self._writing = step
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta.to_dict()),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state) -> tuple[Any, Any, RunMeta]:
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()
            ),
        )
        return out["state"], out["data"], RunMeta.from_dict(out["meta"])

    def saved_stacked(self, step: int) -> bool:
        """Whether checkpoint `step` holds its decoder layers stacked (a run with scanned layers;
        its meta says so, and checkpoints from before scanning have them per layer)."""
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        return RunMeta.from_dict(meta).scan_layers

    def check(self) -> None:
        """CheckpointWriteError, naming the step and the error, once an asynchronous write failed
        (cheap: it asks the write's thread, which it does not wait for)."""
        self._asking(self.manager.check_for_errors)

    def wait(self) -> None:
        self._asking(self.manager.wait_until_finished)

    def _asking(self, ask) -> None:
        """`ask()` orbax about the writes, a failed one turned into CheckpointWriteError (once)."""
        if self._failed is not None:
            raise self._failed
        try:
            ask()
        except Exception as e:
            raise self._lost(e) from e

    def _lost(self, e: Exception) -> CheckpointWriteError:
        where = storage.as_path(self.workdir) / CHECKPOINTS / str(self._writing)
        done = finished_steps(self.workdir)
        last = f"step {done[-1]}" if done else "none yet"
        self._failed = CheckpointWriteError(
            f"{where}: the checkpoint of step {self._writing} could not be written ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:300]}); the run stopped there. The last complete checkpoint is "
            f"{last}: rerun the same command to resume from it"
        )
        return self._failed

    def close(self) -> None:
        try:
            self.manager.close()
        except Exception:
            if self._failed is None:  # else the failed write's error is already reported
                raise


def _remove_unfinished(workdir) -> None:
    """A step a killed run left without its marker is deleted (by process 0, before any process
    saves): a new save of that step must not meet the old one's files. A step uploaded whole by an
    earlier vlguard-jax (runs.is_finished) gets orbax's marker, so orbax lists it."""
    if jax.process_index() == 0:
        root = storage.as_path(workdir) / CHECKPOINTS
        done = marker(workdir) or ""  # a bucket's: remote workdirs only come here
        for p in root.iterdir() if root.is_dir() else ():
            if not p.name.split(".")[0].isdigit() or (p / done).exists():
                continue
            if is_finished(p, done):
                (p / done).write_text("")
            else:
                storage.rmtree(p)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("vlguard_jax: unfinished checkpoints removed")
