"""Training checkpoints with orbax's CheckpointManager: the train state (trainable weights,
optimizer state, step, rng), the data iterator's position, and run metadata (the base
checkpoint, LoRA settings). Saves are asynchronous and atomic: orbax writes to a temporary
directory and renames it on commit, so a killed run never leaves a checkpoint that restores.
"""
from __future__ import annotations

import json

import orbax.checkpoint as ocp

from vlguard_jax import storage

CHECKPOINTS = "checkpoints"
COMMIT_MARKER = "commit_success.txt"  # orbax's, in object storage


class Checkpoints:
    def __init__(self, workdir, every: int, keep: int):
        if storage.is_remote(workdir):
            _remove_unfinished(workdir)
        self.manager = ocp.CheckpointManager(
            storage.absolute(storage.as_path(workdir) / CHECKPOINTS),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=1, create=True,
                                                 cleanup_tmp_directories=True,
                                                 enable_async_checkpointing=True),
            item_names=("state", "data", "meta"))
        self.every = every

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict, meta: dict, force: bool = False) -> bool:
        if not force and (self.every <= 0 or step % self.every):
            return False
        if step in self.manager.all_steps():
            return False
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta)), force=True)

    def restore(self, step: int, abstract_state):
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
        return out["state"], out["data"], out["meta"]

    def saved_stacked(self, step: int) -> bool:
        """Whether checkpoint `step` holds its decoder layers stacked (a run with scanned layers;
        its meta says so, and checkpoints from before scanning have them per layer)."""
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        return bool(meta.get("scan_layers", False))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def finished_steps(workdir) -> list[int]:
    """The steps whose checkpoints are complete, oldest first. Locally orbax renames a finished
    step into place; in a bucket it writes `commit_success.txt` last."""
    root = storage.as_path(workdir) / CHECKPOINTS
    if not root.is_dir():
        return []
    remote = storage.is_remote(workdir)
    return sorted(int(p.name) for p in root.iterdir()
                  if p.name.isdigit() and (not remote or (p / COMMIT_MARKER).exists()))


def _remove_unfinished(workdir) -> None:
    """A step a killed run left without its commit marker is deleted (by process 0, before any
    process saves): a new save of that step must not meet the old one's files."""
    import jax
    if jax.process_index() == 0:
        root = storage.as_path(workdir) / CHECKPOINTS
        if root.is_dir():
            for p in root.iterdir():
                if p.name.split(".")[0].isdigit() and not (p / COMMIT_MARKER).exists():
                    p.rmtree()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("vlguard_jax: unfinished checkpoints removed")


def read_meta(workdir, step: int) -> dict:
    meta_file = storage.as_path(workdir) / CHECKPOINTS / str(step) / "meta" / "metadata"
    return json.loads(meta_file.read_text()) if meta_file.exists() else {}


def read_latest(workdir, step: int | None = None):
    """(step, state, meta) of a training checkpoint, read onto this host's first device whatever
    topology wrote it (for export and inspection)."""
    import jax
    root = storage.as_path(workdir) / CHECKPOINTS
    if step is None:
        steps = finished_steps(workdir)
        if not steps:
            raise FileNotFoundError(f"{workdir}: no finished training checkpoint under {root}")
        step = steps[-1]
    path = storage.absolute(root / str(step))  # orbax takes absolute paths only
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    ckptr = ocp.StandardCheckpointer()
    meta_tree = ckptr.metadata(f"{path}/state").item_metadata
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev), meta_tree)
    state = ckptr.restore(f"{path}/state", target)
    return step, state, read_meta(workdir, step)
