"""VLGuard post-hoc LoRA on MiniGPT-v2: VLGuard train plus 5,000 helpfulness samples, continuing the
authors' stage-3 fine-tuning from their checkpoint (`vlguard-convert minigptv2 ... --lora keep`).

As the sources state them:
- the VLGuard authors (ys-zong/VLGuard, README and issue #1): VLGuard converted to LLaVA's format
  and appended to a random 5k of the original fine-tuning data, then "their fine-tuning scripts";
- MiniGPT-v2's `train_configs/minigptv2_finetune.yaml` and `minigpt_v2.py`: LoRA r 64, alpha 16,
  dropout 0.05 on q_proj and v_proj, continued from the checkpoint's factors; llama_proj trained,
  the tower and ln_vision frozen; AdamW (0.9, 0.999), weight decay 0.05 on weight matrices only;
  warmup from 1e-6 to 1e-5 over 1,000 steps, then a cosine to 1e-6; no gradient clipping;
  448 px images squashed to the square; at most 1,024 answer tokens.

Assumed (no source states them): 3 epochs and a global batch of 16 (8 GPUs' worth of the yaml's
conversation batch of 2); the cosine spans this run's steps, where the authors' stage 3 spans
50 x 1,000 iterations. The helpfulness rows are read from LLaVA-format files (data.llava): point
it at MiniGPT-v2's own fine-tuning data converted to that format for the paper's mix. A mixed
recipe (MiniGPT-v2's multi-dataset stage-3 mixture) is out of scope.
"""

from ml_collections import ConfigDict

from vlguard_jax.data.config import DataConfig
from vlguard_jax.train.config import LoraConfig, ModeConfig, ModelConfig, OptimConfig, RunConfig


def get_config() -> ConfigDict:
    return RunConfig(
        epochs=3,
        global_batch=16,
        micro_batch=4,
        model=ModelConfig(checkpoint="checkpoints/minigptv2-flax"),
        train=ModeConfig("lora"),
        lora=LoraConfig(rank=64, alpha=16.0, dropout=0.05, targets=("q_proj", "v_proj")),
        optim=OptimConfig(
            lr=1e-5,
            projector_lr=1e-5,
            weight_decay=0.05,
            decay_matrices_only=True,
            grad_clip=0.0,
            schedule="lavis",
            warmup_steps=1000,
            warmup_start_lr=1e-6,
            min_lr=1e-6,
        ),
        data=DataConfig(recipe="posthoc", template="minigptv2", pad_image=False),
    ).to_config()
