"""A checkpoint written before the family adapter (tests/fixtures/old_layout, from cf74164) still
loads as a LLaVA and gives the logits it gave then."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from vlguard_jax.checkpoints.loading import load_model
from vlguard_jax.checkpoints.ref import resolve_checkpoint
from vlguard_jax.families import LLAVA

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "old_layout"


def test_a_checkpoint_written_before_the_adapter_loads_and_gives_its_logits():
    ref = resolve_checkpoint(OLD / "checkpoint")
    assert ref.family is LLAVA  # no `architecture` tag: a LLaVA, as every such file was
    want = np.load(OLD / "expected.npz")
    valid = want["mask"].astype(bool)
    for scan in ("off", "on"):  # per layer, and stacked under the family's decoder path
        m = load_model(ref, dtype=jnp.float32, scan_layers=scan)
        got, _ = m.model.apply(
            {"params": m.params}, jnp.asarray(want["ids"]), jnp.asarray(want["pixels"]), jnp.asarray(want["mask"])
        )
        np.testing.assert_allclose(np.asarray(got)[valid], want["logits"][valid], rtol=1e-5, atol=1e-5)
