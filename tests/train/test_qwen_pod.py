"""Qwen2.5-VL trained as a pod trains it (as MiniGPT-v2 and LLaVA are): the converted checkpoint written straight into a gs://
bucket, VLGuard data and images (of several sizes: batches of several image buckets) read from
it, the workdir in it, two processes with their own caches (two hosts); a preemption notice on one
process checkpoints one step, and the restart ends bit-identical to an uninterrupted two-process
run on local files."""

from pathlib import Path

import numpy as np
import pytest

from tests import emulators, tiny_qwen
from tests.test_qwen_end_to_end import resize_some
from tests.train.test_loop import final_params, finish, preempt_process_1, run_env, start_two
from vlguard_jax import storage
from vlguard_jax.checkpoints.runs import finished_steps, read_latest
from vlguard_jax.conversion.hf_to_flax import convert
from vlguard_jax.data.sample import write_sample

pytest.importorskip("gcp_storage_emulator")
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def config_file(path: Path, ck: str, data: dict[str, str]) -> Path:
    """tests.train.qwen.config on `ck` and `data`, for two processes: 5 steps, no periodic
    checkpoint (only the preemption's and the last), LoRA dropout on so the rng state matters."""
    path.write_text(
        "from tests.train.qwen import config\n\n"
        "def get_config():\n"
        f"    c = config({ck!r}, {data!r}, '')\n"
        "    c.total_steps, c.checkpoint_every, c.mesh.shape, c.lora.dropout = 5, 100, (-1, 1, 1), 0.05\n"
        "    c.micro_batch = 4\n"
        "    return c\n"
    )
    return path


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with emulators.started(tmp_path_factory.mktemp("emulators")) as e:
        yield e


def test_two_processes_in_a_bucket_preempted_and_resumed_are_bit_exact(tmp_path, emu):
    built = tiny_qwen.build(tmp_path)
    sample = write_sample(tmp_path / "sample", n_train=8, n_test=8, n_helpful=8)
    resize_some(sample["images"], [(200, 60), (40, 90), (150, 150)])
    local = {k: str(sample[k]) for k in ("train", "helpful", "images")}
    finish(start_two(config_file(tmp_path / "local.py", str(built.flax_dir), local), tmp_path / "ref"))

    bucket = "gs://bkt/qwen"
    convert(built.hf_dir, f"{bucket}/ck", "float32")
    for k in ("train", "helpful"):
        (storage.as_path(bucket) / f"{k}.json").write_text(sample[k].read_text())
    storage.upload_dir(sample["images"], f"{bucket}/images")
    remote = {"train": f"{bucket}/train.json", "helpful": f"{bucket}/helpful.json", "images": f"{bucket}/images"}
    cfg = config_file(tmp_path / "remote.py", f"{bucket}/ck", remote)
    work = f"{bucket}/run"

    def env_of(i):
        return emulators.subprocess_env(emu, run_env(VLGUARD_CACHE=str(tmp_path / f"cache_{i}")))

    step = preempt_process_1(start_two(cfg, work, env_of), work, poll=0.05)
    assert 1 <= step < 5 and finished_steps(work) == [step]
    outs = finish(start_two(cfg, work, env_of))
    assert f"resumed from {work}/checkpoints at step {step}" in outs[0][0]
    assert read_latest(work)[2].family == "qwen2_5_vl"
    step_a, a = final_params(tmp_path / "ref")
    step_b, b = final_params(work)
    assert step_a == step_b == 5
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert emu.refused() == []
