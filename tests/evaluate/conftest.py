import pytest

from vlguard_jax.generate import sampler


@pytest.fixture()
def seen(monkeypatch):
    """What the generator was given: (prompt ids, pixels, sampling) per call."""
    calls = []
    original = sampler.Generator.__call__

    def spy(self, prompts, pix, sampling=sampler.Sampling(), seed=0, on_batch=None):
        calls.append((prompts, pix, sampling))
        return original(self, prompts, pix, sampling, seed, on_batch)

    monkeypatch.setattr(sampler.Generator, "__call__", spy)
    return calls


@pytest.fixture()
def judged(monkeypatch):
    """How many prompts the generator was given, per call (records judged, by a judge)."""
    count = []
    original = sampler.Generator.__call__

    def spy(self, prompts, *a, **k):
        count.append(len(prompts))
        return original(self, prompts, *a, **k)

    monkeypatch.setattr(sampler.Generator, "__call__", spy)
    return count
