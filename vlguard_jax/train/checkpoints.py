"""Training checkpoints with orbax's CheckpointManager: the train state (trainable weights,
optimizer state, step, rng), the data iterator's position, and run metadata (the base
checkpoint, LoRA settings). Saves are asynchronous and atomic: orbax writes to a temporary
directory and renames it on commit, so a killed run never leaves a checkpoint that restores.
"""
from __future__ import annotations

import os

import orbax.checkpoint as ocp

CHECKPOINTS = "checkpoints"


class Checkpoints:
    def __init__(self, workdir, every: int, keep: int):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(os.path.join(os.fspath(workdir), CHECKPOINTS)),
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


def read_latest(workdir, step: int | None = None):
    """(step, state, meta) of a training checkpoint, read onto this host's first device whatever
    topology wrote it (for export and inspection)."""
    import json
    from pathlib import Path

    import jax
    root = Path(workdir) / CHECKPOINTS
    if step is None:
        steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
        if not steps:
            raise FileNotFoundError(f"{workdir}: no finished training checkpoint under {root}")
        step = steps[-1]
    path = (root / str(step)).absolute()  # orbax takes absolute paths only
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    ckptr = ocp.StandardCheckpointer()
    meta_tree = ckptr.metadata(path / "state").item_metadata
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev), meta_tree)
    state = ckptr.restore(path / "state", target)
    meta_file = path / "meta" / "metadata"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    return step, state, meta
