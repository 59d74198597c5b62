"""The built-in demo (`python -m vlguard_jax.demo`): a tiny LLaVA on the built-in sample data, on CPU.

Stage 1 instruction-tunes a random tiny LLaVA on the sample helpfulness data (which complies with
harmful requests); stage 2 is the paper's post-hoc recipe, LoRA on VLGuard-format train data plus
a helpfulness subset, with smaller sizes. `get_config()` is stage 2's training config; the `demo`
block holds the model shape, stage 1 and the evaluation settings.
"""

import ml_collections

from vlguard_jax.train.defaults import base_config


def get_config():
    c = base_config()
    c.workdir = "runs/demo"
    c.seed = 0
    c.total_steps = 500
    c.global_batch = 16
    c.micro_batch = 16
    c.checkpoint_every = 250
    c.log_every = 15
    c.loss_chunk = 256
    c.model.dtype = "float32"
    c.model.attn_impl = "xla"
    c.model.remat = "none"
    c.train.mode = "lora"
    c.lora.rank = 32
    c.lora.alpha = 64.0
    c.lora.dropout = 0.05
    c.optim.lr = 5e-3
    c.optim.projector_lr = 3e-4
    c.mesh.shape = (1, 1, 1)
    # Where `python -m vlguard_jax.demo` (workdir runs/demo) puts stage 1's model and the sample data:
    # `python -m vlguard_jax.train --config configs/demo.py --config.workdir=runs/demo/stage2`
    # then runs (or resumes) stage 2 alone.
    c.model.checkpoint = "runs/demo/stage1_model"
    c.data.vlguard, c.data.vlguard_images = "runs/demo/data/train.json", "runs/demo/data/images"
    c.data.llava, c.data.llava_images = "runs/demo/data/helpful.json", "runs/demo/data/images"
    c.data.recipe = "posthoc"
    # A sixteenth of the stage-2 mix: the sample helpfulness rows are 15% compliant answers to harmful
    # requests (so that stage 1 turns unsafe at this size), far more than LLaVA's data holds; 32 of
    # them brought ~5 such answers against the 128 refusals and the tiny model learned the wording
    # that told them apart, failing seeds 6 and 9 (BENCHMARKS.md).
    c.data.helpful_samples = 8
    c.data.max_length = 192
    c.data.bucket = 32
    c.data.workers = 0

    c.demo = ml_collections.ConfigDict()
    c.demo.train_records = 128  # VLGuard-format train split; half safe images
    c.demo.test_records = 128  # the held-out split: 64 prompts per evaluated subset
    c.demo.vocab_size = 1024  # whole words, as a real tokenizer has: the system prompt is 24 tokens, not 88
    c.demo.vision = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14
    )
    c.demo.text = dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=512,
    )
    c.demo.stage1_steps = 250
    c.demo.stage1_lr = 3e-3
    c.demo.max_new_tokens = 40
    c.demo.eval_batch = 16
    return c
