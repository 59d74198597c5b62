"""Export of a training run: LoRA merged into a full Hugging Face model, and a PEFT adapter that
`PeftModel.from_pretrained` loads over the base model with the same logits as the merged export."""

import jax.numpy as jnp
import numpy as np
import peft
import pytest
import transformers
from flax import traverse_util

from tests import tiny
from tests.train import common
from vlguard_jax.conversion.flax_to_hf import export, main
from vlguard_jax.train.loop import run


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    ns = common.setup(tmp)
    cfg = common.config(
        ns, tmp / "run", total_steps=4, checkpoint_every=4, **{"optim.lr": 3e-2, "optim.projector_lr": 1e-2}
    )
    run(cfg, log_fn=lambda *_: None)
    return ns, tmp


def inputs(ns):
    ids, mask, pixels = tiny.batch(ns.cfg, ns.tok, rows=("image", "text", "image"), lengths=(9, 6, 12))
    return ids, mask, pixels


def hf_logits(model, ns):
    ids, mask, pixels = inputs(ns)
    return tiny.torch_logits(model, ids, mask, pixels), mask


@pytest.mark.slow
def test_merge_and_peft_exports_agree(lora_run):
    ns, tmp = lora_run
    assert main(["--src", str(tmp / "run"), "--dst", str(tmp / "merged"), "--lora", "merge"]) == 0
    assert main(["--src", str(tmp / "run"), "--dst", str(tmp / "adapter"), "--lora", "peft"]) == 0
    cfg = __import__("json").loads((tmp / "adapter" / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"], cfg["task_type"]) == (4, 8.0, 0.0, "CAUSAL_LM")
    assert "q_proj" in cfg["target_modules"] and "down_proj" in cfg["target_modules"]

    merged = transformers.LlavaForConditionalGeneration.from_pretrained(tmp / "merged").eval()
    base = transformers.LlavaForConditionalGeneration.from_pretrained(ns.hf_dir).eval()
    before, mask = hf_logits(base, ns)
    adapted = peft.PeftModel.from_pretrained(base, tmp / "adapter").eval()
    # Every adapter weight was loaded (no silent random init): LoRA B is non-zero after training.
    b_norm = sum(p.abs().sum().item() for n, p in adapted.named_parameters() if "lora_B" in n)
    assert b_norm > 0
    assert not any("vision_tower" in n and "lora_" in n for n, _ in adapted.named_parameters())
    ours_merged, _ = hf_logits(merged, ns)
    ours_peft, _ = hf_logits(adapted, ns)
    assert tiny.rel_err(ours_peft, ours_merged, mask) < 1e-5
    assert tiny.rel_err(ours_merged, before, mask) > 1e-3, "training changed nothing"


def test_merged_export_matches_the_flax_model_with_adapters(lora_run):
    """Our model with unmerged LoRA factors == transformers on the merged export."""
    ns, tmp = lora_run
    from vlguard_jax.checkpoints.runs import load_run
    from vlguard_jax.models.config import LoraSpec
    from vlguard_jax.models.llava import LlavaModel

    _, config, flat, meta = load_run(tmp / "run")
    model = LlavaModel(config, lora=LoraSpec(4, 8.0))
    ids, mask, pixels = inputs(ns)
    logits, _ = model.apply(
        {"params": traverse_util.unflatten_dict(flat)},
        jnp.asarray(ids),
        jnp.asarray(tiny.row_pixels(ids, ns.cfg, pixels)),
    )
    if not (tmp / "merged").exists():
        export(tmp / "run", tmp / "merged", lora="merge")
    ref, _ = hf_logits(transformers.LlavaForConditionalGeneration.from_pretrained(tmp / "merged").eval(), ns)
    assert tiny.rel_err(np.asarray(logits), ref, mask) < 1e-4


def test_export_errors(lora_run):
    ns, tmp = lora_run
    with pytest.raises(ValueError, match="is a LoRA run: pass --lora merge"):
        export(tmp / "run", tmp / "x1")
    with pytest.raises(ValueError, match="--lora applies to a training run"):
        export(ns.flax_dir, tmp / "x2", lora="merge")
    assert not (tmp / "x1").exists() and not (tmp / "x2").exists()
