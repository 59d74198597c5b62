"""A run as a pod runs it, shared by the families' pod tests: the converted checkpoint written
straight into a gs:// bucket, VLGuard data and images read from it, the workdir in it, two
processes with their own caches (two hosts); a preemption notice on one process checkpoints one
step, and the restart ends bit-identical to an uninterrupted two-process run on local files."""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests import emulators
from tests.train.test_loop import final_params, finish, preempt_process_1, run_env, start_two
from vlguard_jax import storage
from vlguard_jax.checkpoints.runs import finished_steps, read_latest


def config_file(path: Path, module: str, ck: str, data: dict[str, str], steps: int) -> Path:
    """`module`'s config(ck, data) for two processes: `steps` steps, no periodic checkpoint (only
    the preemption's and the last), LoRA dropout on so the rng state matters."""
    path.write_text(
        f"from {module} import config\n\n"
        "def get_config():\n"
        f"    c = config({ck!r}, {data!r}, '')\n"
        f"    c.total_steps, c.checkpoint_every, c.mesh.shape, c.lora.dropout = {steps}, 100, (-1, 1, 1), 0.05\n"
        "    return c\n"
    )
    return path


def preempted_in_a_bucket_is_bit_exact(
    tmp_path: Path,
    emu,
    module: str,
    local_ck: Path,
    convert_to: Callable[[str], object],
    sample: dict,
    family: str,
    steps: int,
) -> None:
    """The reference on local files, then the bucket run preempted and resumed (module doc)."""
    local = {k: str(sample[k]) for k in ("train", "helpful", "images")}
    finish(start_two(config_file(tmp_path / "local.py", module, str(local_ck), local, steps), tmp_path / "ref"))

    bucket = f"gs://bkt/{family}"
    convert_to(f"{bucket}/ck")
    for k in ("train", "helpful"):
        (storage.as_path(bucket) / f"{k}.json").write_text(sample[k].read_text())
    storage.upload_dir(sample["images"], f"{bucket}/images")
    remote = {"train": f"{bucket}/train.json", "helpful": f"{bucket}/helpful.json", "images": f"{bucket}/images"}
    cfg = config_file(tmp_path / "remote.py", module, f"{bucket}/ck", remote, steps)
    work = f"{bucket}/run"

    def env_of(i):
        return emulators.subprocess_env(emu, run_env(VLGUARD_CACHE=str(tmp_path / f"cache_{i}")))

    step = preempt_process_1(start_two(cfg, work, env_of), work, poll=0.05)
    assert 1 <= step < steps and finished_steps(work) == [step]
    outs = finish(start_two(cfg, work, env_of))
    assert f"resumed from {work}/checkpoints at step {step}" in outs[0][0]
    assert read_latest(work)[2].family == family
    step_a, a = final_params(tmp_path / "ref")
    step_b, b = final_params(work)
    assert step_a == step_b == steps
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert emu.refused() == []
