"""A text-only Llama (the Llama Guard judge's architecture): conversion from a transformers
`LlamaForCausalLM`, float32 logit parity at 1e-4, greedy generation identical to transformers'
`generate`, and clear errors where a LLaVA checkpoint is expected."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests import tiny
from vlguard_jax import load_model
from vlguard_jax.generate import Sampling, load_generator
from vlguard_jax.models.text_only import TextOnlyModel
from vlguard_jax.models.text_only_config import TextOnlyConfig


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny.build_llama(tmp_path_factory.mktemp("llama"))


def test_conversion_writes_a_text_only_checkpoint(built):
    cfg = json.loads((built.flax_dir / "model_config.json").read_text())
    assert cfg["architecture"] == "llama" and "vision" not in cfg
    assert not (built.flax_dir / "preprocessor_config.json").exists()
    m = load_model(built.flax_dir, dtype=jnp.float32)
    assert isinstance(m.model, TextOnlyModel) and isinstance(m.config, TextOnlyConfig)
    assert set(m.params) == {"language_model"} and m.tokenizer.chat_template == tiny.GUARD_TEMPLATE


def test_float32_logits_match_transformers(built):
    rng = np.random.default_rng(0)
    lengths = (11, 5, 17)
    ids = np.zeros((3, 17), np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = [1] + rng.integers(3, len(built.tok), n - 1).tolist()
        mask[i, :n] = 1
    with torch.no_grad():
        ref = built.model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    m = load_model(built.flax_dir, dtype=jnp.float32)
    ours, _ = m.model.apply({"params": m.params}, jnp.asarray(ids), None, attention_mask=jnp.asarray(mask))
    assert tiny.rel_err(ours, ref, mask) <= 1e-4


def test_greedy_generation_matches_transformers(built):
    rng = np.random.default_rng(1)
    prompts = [[1] + rng.integers(3, len(built.tok), n).tolist() for n in (7, 15, 3)]
    gen, _ = load_generator(built.flax_dir, dtype=jnp.float32, batch_size=4, bucket=8)
    ours = gen(prompts, [None] * 3, Sampling(max_new_tokens=10))
    t = max(map(len, prompts))
    x = np.zeros((3, t), np.int64)
    mask = np.zeros_like(x)
    for i, p in enumerate(prompts):
        x[i, t - len(p) :], mask[i, t - len(p) :] = p, 1
    with torch.no_grad():
        out = built.model.generate(
            input_ids=torch.tensor(x),
            attention_mask=torch.tensor(mask),
            do_sample=False,
            max_new_tokens=10,
            eos_token_id=2,
            pad_token_id=0,
        )
    ref = [r[: next((k + 1 for k, tok in enumerate(r) if tok == 2), len(r))] for r in out[:, t:].tolist()]
    assert ours == ref
    with pytest.raises(ValueError, match="text-only"):
        gen(prompts[:1], [np.zeros((3, 28, 28), np.float32)], Sampling(max_new_tokens=2))


def test_llava_only_tools_refuse_a_text_only_checkpoint(built, tmp_path, capsys):
    from vlguard_jax.conversion import flax_to_hf
    from vlguard_jax.families import LLAVA, load_config

    with pytest.raises(ValueError, match="a text-only Llama checkpoint, not a LLaVA one"):
        load_config(built.flax_dir / "model_config.json", LLAVA)
    assert flax_to_hf.main(["--src", str(built.flax_dir), "--dst", str(tmp_path / "out")]) == 1
    assert "text-only Llama" in capsys.readouterr().err and not (tmp_path / "out").exists()
