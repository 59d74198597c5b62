"""MiniGPT-v2 trained as a pod trains it (tests/train/pod.py): its converted checkpoint, data and
workdir in a gs:// bucket, two processes, a preemption notice on one and a bit-exact restart."""

import pytest

from tests.minigptv2_reference import write_parts
from tests.train.pod import preempted_in_a_bucket_is_bit_exact
from vlguard_jax.conversion.minigptv2 import convert
from vlguard_jax.data.sample import write_sample

pytest.importorskip("gcp_storage_emulator")
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def test_two_processes_in_a_bucket_preempted_and_resumed_are_bit_exact(tmp_path, emu):
    parts = write_parts(tmp_path / "parts")
    sample = write_sample(tmp_path / "sample", n_train=8, n_test=8, n_helpful=8)

    def convert_to(dst):
        convert(parts.llm, parts.eva, parts.ckpt, dst, dtype="float32", log=lambda _: None)

    convert_to(tmp_path / "ck")
    preempted_in_a_bucket_is_bit_exact(
        tmp_path, emu, "tests.train.minigptv2", tmp_path / "ck", convert_to, sample, "minigptv2", steps=8
    )
