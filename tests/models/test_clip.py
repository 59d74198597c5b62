"""The CLIP tower alone, against transformers' hidden states, layer by layer."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests import tiny
from vlguard_jax import load_model
from vlguard_jax.models.clip import CLIPVisionTower


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny.build(tmp_path_factory.mktemp("clip"), vision_layers=3)


@pytest.mark.parametrize("num_layers", [0, 1, 2, 3])
def test_hidden_state_after_k_layers(built, num_layers):
    m = load_model(built.flax_dir, dtype=jnp.float32)
    pixels = np.random.default_rng(num_layers).normal(size=(2, 3, 28, 28)).astype(np.float32)
    with torch.no_grad():
        ref = built.model.model.vision_tower(torch.tensor(pixels), output_hidden_states=True)
    ref = ref.hidden_states[num_layers].numpy()
    tower = CLIPVisionTower(m.config.vision, num_layers=num_layers)
    ours = tower.apply({"params": m.params["vision_tower"]}, jnp.asarray(pixels))
    assert np.abs(np.asarray(ours) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_wrong_image_size_is_an_error(built):
    m = load_model(built.flax_dir, dtype=jnp.float32)
    tower = CLIPVisionTower(m.config.vision, num_layers=1)
    with pytest.raises(ValueError, match="pixel_values shape"):
        tower.apply({"params": m.params["vision_tower"]}, jnp.zeros((1, 3, 32, 32)))
