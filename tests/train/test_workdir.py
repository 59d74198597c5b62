"""A run's identity (train/workdir.py): written once, by the process that writes; compared on
every resume by every process, so a refused resume stops all of them; a config whose fields are
tuples compares equal to itself read back from JSON."""

import dataclasses

import pytest

from vlguard_jax.errors import ConfigError
from vlguard_jax.models.qwen2_5_vl import Qwen2_5_VLConfig
from vlguard_jax.train.workdir import RUN, check_resume


def test_an_identity_is_written_by_the_writer_and_compared_by_everyone(tmp_path):
    now = {"model": Qwen2_5_VLConfig().to_dict(), "mode": "lora"}
    check_resume(tmp_path, now, allow=True, write=False)  # another process, on a fresh run
    assert not (tmp_path / RUN).exists()
    check_resume(tmp_path, now, allow=True)
    check_resume(tmp_path, now, allow=False)  # the same identity, its tuples read back as lists
    changed = dict(now, model=dataclasses.replace(Qwen2_5_VLConfig(), max_pixels=28 * 28 * 4).to_dict())
    for write in (True, False):  # every process refuses the same resume
        with pytest.raises(ConfigError, match="started with another model shapes"):
            check_resume(tmp_path, changed, allow=False, write=write)
    said = []
    check_resume(tmp_path, changed, allow=True, log=said.append, write=False)
    assert said and check_resume(tmp_path, now, allow=False) is None  # a reader does not rewrite it
