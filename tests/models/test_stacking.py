"""The decoder's two weight forms: per layer (disk, converters) and stacked (scanned layers)."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests import tiny
from vlguard_jax.checkpoints.loading import load_model
from vlguard_jax.errors import ConfigError
from vlguard_jax.families import LLAMA, LLAVA
from vlguard_jax.generate import load_generator
from vlguard_jax.models.config import DEFAULT_SCAN, ScanLayers
from vlguard_jax.models.llava_config import LlavaConfig
from vlguard_jax.models.stacking import (
    SCAN_MIN_LAYERS,
    is_stacked,
    to_per_layer,
    to_stacked,
    wants_scan,
)
from vlguard_jax.models.text_only_config import TextOnlyConfig
from vlguard_jax.train.defaults import base_config


def params(n=3):
    layer = lambda i: {
        "self_attn": {
            "q_proj": {"kernel": jnp.full((2, 3), i, jnp.float32), "lora_a": jnp.full((2, 1), 10 + i, jnp.float32)}
        }
    }
    return {
        "projector": {"w": jnp.ones(4)},
        "vision_tower": {"layers_0": {"w": jnp.zeros(2)}},
        "language_model": {"norm": jnp.ones(3), **{f"layers_{i}": layer(i) for i in range(n)}},
    }


def test_stacking_moves_layer_i_to_index_i_and_back():
    p = params()
    s = to_stacked(p)
    assert is_stacked(s) and not is_stacked(p)
    q = s["language_model"]["layers"]["self_attn"]["q_proj"]
    assert q["kernel"].shape == (3, 2, 3) and [float(q["kernel"][i, 0, 0]) for i in range(3)] == [0, 1, 2]
    assert [float(q["lora_a"][i, 0, 0]) for i in range(3)] == [10, 11, 12]
    assert "layers_0" in s["vision_tower"]  # only the decoder is stacked
    back = to_per_layer(s)
    assert jax.tree.structure(back) == jax.tree.structure(p)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(p)))
    assert to_stacked(s) is not None and is_stacked(to_stacked(s))  # already stacked: unchanged


def test_optimizer_state_converts_with_its_parameters():
    """Adam's moments mirror the parameters inside optax's NamedTuples and masks."""
    p = params()
    labels = lambda t: {k: jax.tree.map(lambda _, k=k: "b" if k == "projector" else "a", v) for k, v in t.items()}
    opt = optax.chain(
        optax.clip_by_global_norm(1.0), optax.multi_transform({"a": optax.adam(1e-3), "b": optax.adam(1e-4)}, labels)
    )
    state = opt.update(p, opt.init(p), p)[1]
    want = jax.tree.structure(opt.init(to_stacked(p)))
    assert jax.tree.structure(to_stacked(state)) == want
    mu = to_stacked(state)[1].inner_states["a"].inner_state[0].mu["language_model"]["layers"]
    assert mu["self_attn"]["q_proj"]["kernel"].shape == (3, 2, 3)
    back = to_per_layer(to_stacked(state), 3)
    assert jax.tree.structure(back) == jax.tree.structure(state)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)))


def test_unstacking_arrayless_layers_needs_their_count():
    masked = {"language_model": {"layers": {"w": optax.MaskedNode()}}}
    with pytest.raises(ValueError, match="pass num_layers"):
        to_per_layer(masked)
    assert set(to_per_layer(masked, 2)["language_model"]) == {"layers_0", "layers_1"}


def test_stacking_refuses_a_gap_in_the_layers():
    p = params()
    del p["language_model"]["layers_1"]
    with pytest.raises(ValueError, match=r"decoder layers \[0, 2\]"):
        to_stacked(p)


def test_auto_scans_deep_llava_models_only():
    deep = LlavaConfig.from_hf(tiny.hf_config(text_layers=SCAN_MIN_LAYERS).to_dict())
    shallow = LlavaConfig.from_hf(tiny.hf_config(text_layers=SCAN_MIN_LAYERS - 1).to_dict())
    assert LLAVA.wants_scan("auto", deep) and not LLAVA.wants_scan("auto", shallow)
    assert LLAVA.wants_scan("on", shallow) and not LLAVA.wants_scan("off", deep) and LLAVA.wants_scan(True, shallow)
    text_only = TextOnlyConfig(text=deep.text)
    assert not LLAMA.wants_scan("auto", text_only) and not wants_scan("auto", deep, scannable=False)
    with pytest.raises(ConfigError, match=r"scan_layers must be one of \['auto', 'on', 'off'\], not 'yes'"):
        LLAVA.wants_scan("yes", deep)


def test_scan_layers_is_one_setting_with_one_default():
    """The config, `load_model` and `load_generator` take the same enum, with the same default."""
    assert [ScanLayers.of(x) for x in ("auto", "on", "off", True, False, ScanLayers.ON)] == [
        ScanLayers.AUTO,
        ScanLayers.ON,
        ScanLayers.OFF,
        ScanLayers.ON,
        ScanLayers.OFF,
        ScanLayers.ON,
    ]
    defaults = {
        "config": base_config().model.scan_layers,
        "load_model": inspect.signature(load_model).parameters["scan_layers"].default,
        "load_generator": inspect.signature(load_generator).parameters["scan_layers"].default,
    }
    assert defaults == dict.fromkeys(defaults, DEFAULT_SCAN) and DEFAULT_SCAN is ScanLayers.AUTO
