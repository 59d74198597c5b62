"""VLGuard post-hoc LoRA on MiniGPT-v2: VLGuard train plus 5,000 helpfulness samples, continuing the
authors' stage-3 fine-tuning from their checkpoint (`vlguard-convert minigptv2 ... --lora keep`).

As the sources state them:
- the VLGuard authors (ys-zong/VLGuard, README and issue #1): VLGuard converted to LLaVA's format
  and appended to a random 5k of the original fine-tuning data, then "their fine-tuning scripts";
- MiniGPT-v2's `train_configs/minigptv2_finetune.yaml` and `minigpt_v2.py`: LoRA r 64, alpha 16,
  dropout 0.05 on q_proj and v_proj, continued from the checkpoint's factors; llama_proj trained,
  the tower and ln_vision frozen; AdamW (0.9, 0.999), weight decay 0.05 on weight matrices only;
  the schedule `linear_warmup_cosine_lr` (optim.schedule "lavis", MiniGPT-4's
  LinearWarmupCosineLRScheduler exactly) from 1e-6 to 1e-5, then a cosine to 1e-6; no gradient
  clipping; 448 px images squashed to the square; at most 1,024 answer tokens.

Assumed (no source states them):
- 3 epochs and a global batch of 16 (8 GPUs' worth of the yaml's conversation batch of 2).
- The schedule's length: the authors' stage 3 warms up 1,000 of its 50 x 1,000 iterations (2%),
  then spans the cosine over all 50,000. A VLGuard run is about 1,300 steps, where 1,000 warmup
  steps would spend three quarters of it warming up and then drop the rate to a quarter of its
  peak at once. So the cosine spans this run (iters_per_epoch and max_epoch 0) and the warmup is
  the authors' 2% of it (warmup_ratio 0.02); set optim.iters_per_epoch=1000, max_epoch=50 and
  warmup_steps=1000 for their stage-3 schedule itself.
- The loss: a mean over the supervised tokens of the whole global batch, where the authors'
  is each GPU's token mean over its 2 rows, averaged over GPUs by DDP.
The helpfulness rows are read from LLaVA-format files (data.llava): point it at MiniGPT-v2's own
fine-tuning data converted to that format for the paper's mix. A mixed recipe (MiniGPT-v2's
multi-dataset stage-3 mixture) is out of scope.
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
            warmup_ratio=0.02,  # the authors' 1,000 of 50 x 1,000 iterations, sized to this run
            warmup_start_lr=1e-6,
            min_lr=1e-6,
        ),
        data=DataConfig(recipe="posthoc", template="minigptv2", pad_image=False),
    ).to_config()
