"""The paper's mixed recipe end to end on tiny random parts, through the commands a researcher runs:
assemble Vicuna + CLIP + the stage-1 projector, a few mixed-LoRA steps with the mixed config's
values, AdvBench on the base LLM and on the trained VLLM, the report of both, and a merged Hugging
Face export whose logits equal our model's."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from configs import mixed_lora_7b
from tests import tiny
from vlguard_jax import load_model
from vlguard_jax.conversion.flax_to_hf import main as flax_to_hf
from vlguard_jax.conversion.hf_to_flax import main as hf_to_flax
from vlguard_jax.conversion.llava_assemble import main as assemble
from vlguard_jax.data.sample import write_sample
from vlguard_jax.evaluate.__main__ import main as evaluate
from vlguard_jax.train.loop import run as train

pytestmark = pytest.mark.slow


def test_mixed_recipe_from_parts_to_hugging_face(tmp_path, shared_data):
    parts = tiny.llava_parts(tmp_path / "parts")
    start = tmp_path / "llava-pretrain-flax"
    assert (
        assemble(
            [
                "--llm",
                str(parts.llm_dir),
                "--vision-tower",
                str(parts.clip_dir),
                "--projector",
                str(parts.proj_file),
                "--dst",
                str(start),
                "--dtype",
                "float32",
            ]
        )
        == 0
    )

    sample = write_sample(tmp_path / "data")
    c = mixed_lora_7b.get_config()
    c.workdir = str(tmp_path / "run")
    c.model.checkpoint = str(start)
    c.model.dtype, c.model.attn_impl, c.model.remat = "float32", "xla", "none"
    c.data.vlguard, c.data.vlguard_images = str(sample["train"]), str(sample["images"])
    c.data.llava, c.data.llava_images = str(sample["helpful"]), str(sample["images"])
    c.total_steps, c.global_batch, c.micro_batch, c.checkpoint_every = 3, 8, 4, 3
    c.data.max_length, c.data.bucket, c.data.workers, c.lora.rank, c.lora.alpha = 192, 64, 0, 4, 8.0
    logs = []
    last = train(c, log_fn=logs.append)
    assert last["step"] == 3 and np.isfinite(last["loss"])
    mix = next(line for line in logs if line.startswith("data mixture")).splitlines()
    text_only = sum("image" not in row for row in json.loads(sample["helpful"].read_text()))
    assert mix[:3] == [
        "data mixture: 256 examples",
        "  vlguard: 64 (safe 32, unsafe 32)",
        f"  llava: 192 (text_only {text_only})",
    ]  # every VLGuard train row and the whole mix, its text-only rows counted from the file

    llm = tmp_path / "vicuna-flax"
    assert hf_to_flax(["--src", str(parts.llm_dir), "--dst", str(llm), "--dtype", "float32"]) == 0
    adv = str(shared_data / "advbench" / "harmful_behaviors.csv")
    for name, ckpt in (("vicuna", llm), ("mixed", tmp_path / "run")):
        assert (
            evaluate(
                [
                    "--checkpoint",
                    str(ckpt),
                    "--benchmark",
                    "advbench",
                    "--data",
                    adv,
                    "--out",
                    str(tmp_path / "eval" / name),
                    "--max-new-tokens",
                    "3",
                    "--limit",
                    "2",
                ]
            )
            == 0
        )
    kinds = {
        n: json.loads((tmp_path / "eval" / n / "summary.json").read_text())["advbench/vanilla"]
        for n in ("vicuna", "mixed")
    }
    assert (kinds["vicuna"]["model"], kinds["vicuna"]["protocol"]["template"]) == ("llm", "vicuna_v1")
    assert (kinds["mixed"]["model"], kinds["mixed"]["protocol"]["template"]) == ("vllm", "llava_v1")
    assert (
        evaluate(
            [
                "report",
                "--runs",
                str(tmp_path / "eval" / "vicuna"),
                str(tmp_path / "eval" / "mixed"),
                "--out",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    assert "| model | LLM | VLLM |" in (tmp_path / "report" / "report.md").read_text()

    hf = tmp_path / "hf"
    assert flax_to_hf(["--src", str(tmp_path / "run"), "--dst", str(hf), "--lora", "merge"]) == 0
    ref = transformers.LlavaForConditionalGeneration.from_pretrained(hf, dtype=torch.float32).eval()
    ours = load_model(tmp_path / "run", dtype=jnp.float32)
    image_id = ours.config.image_token_index
    vocab = ours.config.text.vocab_size
    ids = np.array([[1] + [image_id] * ours.config.num_image_tokens + [5, 9, 17, 33, 2]], np.int64)
    mask = np.ones_like(ids)
    pixels = np.random.default_rng(0).normal(size=(1, 3, 28, 28)).astype(np.float32)
    want = tiny.torch_logits(ref, ids, mask, pixels)[..., :vocab]
    got, _ = ours.model.apply({"params": ours.params}, jnp.asarray(ids), jnp.asarray(pixels))
    assert tiny.rel_err(got, want, mask) <= 1e-4
