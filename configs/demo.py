"""The built-in demo (`python -m vlguard_jax.demo`): a tiny LLaVA on the built-in sample data, on CPU.

Stage 1 instruction-tunes a random tiny LLaVA on the sample helpfulness data (which complies with
harmful requests); stage 2 is the paper's post-hoc recipe, LoRA on VLGuard-format train data plus
a helpfulness subset, with smaller sizes. `get_config()` is stage 2's training config; the `demo`
block holds the model shape, stage 1 and the evaluation settings.
"""

from ml_collections import ConfigDict

from vlguard_jax.data.config import DataConfig
from vlguard_jax.train.config import LoraConfig, MeshConfig, ModeConfig, ModelConfig, OptimConfig, RunConfig

# Where `python -m vlguard_jax.demo` (workdir runs/demo) puts stage 1's model and the sample data:
# `python -m vlguard_jax.train --config configs/demo.py --config.workdir=runs/demo/stage2` then runs
# (or resumes) stage 2 alone.
DATA = "runs/demo/data"


def get_config() -> ConfigDict:
    c = RunConfig(
        workdir="runs/demo",
        seed=0,
        total_steps=500,
        global_batch=16,
        micro_batch=16,
        checkpoint_every=250,
        log_every=15,
        loss_chunk=256,
        model=ModelConfig(checkpoint="runs/demo/stage1_model", dtype="float32", attn_impl="xla", remat="none"),
        train=ModeConfig("lora"),
        lora=LoraConfig(rank=32, alpha=64.0, dropout=0.05),
        optim=OptimConfig(lr=5e-3, projector_lr=3e-4),
        mesh=MeshConfig((1, 1, 1)),
        data=DataConfig(
            recipe="posthoc",
            vlguard=f"{DATA}/train.json",
            vlguard_images=f"{DATA}/images",
            llava=f"{DATA}/helpful.json",
            llava_images=f"{DATA}/images",
            # A sixteenth of the stage-2 mix: the sample helpfulness rows are 15% compliant answers
            # to harmful requests (so that stage 1 turns unsafe at this size), far more than
            # LLaVA's data holds; 32 of them brought ~5 such answers against the 128 refusals and
            # the tiny model learned the wording that told them apart, failing seeds 6 and 9
            # (BENCHMARKS.md).
            helpful_samples=8,
            max_length=192,
            bucket=32,
            workers=0,
        ),
    ).to_config()
    c.demo = ConfigDict(
        dict(
            train_records=128,  # VLGuard-format train split; half safe images
            test_records=128,  # the held-out split: 64 prompts per evaluated subset
            vocab_size=1024,  # whole words, as a real tokenizer has: the system prompt is 24 tokens, not 88
            vision=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=56,
                patch_size=14,
            ),
            text=dict(
                hidden_size=128,
                intermediate_size=256,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=4,
                head_dim=32,
                max_position_embeddings=512,
            ),
            stage1_steps=250,
            stage1_lr=3e-3,
            max_new_tokens=40,
            eval_batch=16,
        )
    )
    return c
