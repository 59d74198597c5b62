"""Qwen2.5-VL trained as a pod trains it (tests/train/pod.py): its converted checkpoint, data and
workdir in a gs:// bucket, images of several sizes (batches of several buckets), two processes, a
preemption notice on one and a bit-exact restart."""

import pytest

from tests import tiny_qwen
from tests.test_qwen_end_to_end import resize_some
from tests.train.pod import preempted_in_a_bucket_is_bit_exact
from vlguard_jax.conversion.hf_to_flax import convert
from vlguard_jax.data.sample import write_sample

pytest.importorskip("gcp_storage_emulator")
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def test_two_processes_in_a_bucket_preempted_and_resumed_are_bit_exact(tmp_path, emu):
    built = tiny_qwen.build(tmp_path)
    sample = write_sample(tmp_path / "sample", n_train=8, n_test=8, n_helpful=8)
    resize_some(sample["images"], [(200, 60), (40, 90), (150, 150)])
    preempted_in_a_bucket_is_bit_exact(
        tmp_path,
        emu,
        "tests.train.qwen",
        built.flax_dir,
        lambda dst: convert(built.hf_dir, dst, "float32"),
        sample,
        "qwen2_5_vl",
        steps=5,
    )
