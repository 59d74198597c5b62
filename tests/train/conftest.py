"""Fixtures the training tests share."""

import pytest

from tests import emulators


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """The storage emulators on 127.0.0.1 (fake credentials, metadata discovery off), for the
    families' pod tests (tests/train/pod.py)."""
    with emulators.started(tmp_path_factory.mktemp("emulators")) as e:
        yield e
