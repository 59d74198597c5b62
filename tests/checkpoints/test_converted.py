"""Parameter checkpoints: save, metadata and restore through paths relative to the current
directory (orbax itself takes absolute paths only)."""

import jax.numpy as jnp
import numpy as np

from vlguard_jax.checkpoints.converted import load_params, param_metadata, save_checkpoint
from vlguard_jax.models import TextConfig, VisionConfig
from vlguard_jax.models.llava_config import LlavaConfig


def test_relative_paths_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = LlavaConfig(
        vision=VisionConfig(
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        text=TextConfig(
            vocab_size=32,
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=4,
        ),
        image_token_index=31,
    )
    params = {"a": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": np.ones(4, np.int32)}
    save_checkpoint("ckpt", config, params)
    assert (tmp_path / "ckpt" / "params").is_dir()
    assert param_metadata("ckpt/params")["a"]["w"].shape == (2, 3)
    back = load_params("ckpt/params")
    np.testing.assert_array_equal(back["a"]["w"], params["a"]["w"])
    assert jnp.asarray(back["b"]).dtype == jnp.int32
