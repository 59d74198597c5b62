"""VLGuard post-hoc LoRA on Qwen2.5-VL-7B-Instruct: VLGuard train plus 5,000 helpfulness samples,
asked in Qwen's chat template, on the converted Instruct checkpoint:

    vlguard-convert hf-to-flax --src Qwen/Qwen2.5-VL-7B-Instruct --dst checkpoints/qwen2.5-vl-7b-flax \\
        --min-pixels 12544 --max-pixels 451584

As the sources state them:
- the VLGuard authors (ys-zong/VLGuard; the paper's post-hoc recipe, configs/paper.py): VLGuard
  train plus 5,000 helpfulness samples; LoRA on the LLM's linear layers at 2e-4, r 128, alpha
  256, the projector at its own 2e-5 (here the merger, Qwen's projector), the vision tower
  frozen; 3 epochs, global batch 128, cosine with 3% warmup, no weight decay, 2,048 tokens;
- Qwen2.5-VL's own fine-tuning code (QwenLM/Qwen2.5-VL, qwen-vl-finetune): its chat template with
  the default system prompt and its labels (replies and their `<|im_end|>`; data/qwen_tokens.py),
  and its images' pixel range, min_pixels 28*28*16 and max_pixels 28*28*576 (DataArguments), set
  at conversion as above: at most 576 image tokens, 2,304 patches in the largest bucket;
- LLaMA-Factory (examples/train_lora/qwen2_5vl_lora_sft.yaml, and its defaults) trains the same
  model with LoRA r 8 on every linear layer of the LLM at 1e-4, 3 epochs, cosine with 10% warmup,
  the tower and the projector frozen: set lora.rank=8, lora.alpha=16, optim.lr=1e-4,
  optim.warmup_ratio=0.1 and train.freeze_projector=True for theirs.

Assumed (no source states them for Qwen2.5-VL): that VLGuard's LLaVA values carry over (the
learning rates, rank, epochs, batch and warmup above); that the 5,000 helpfulness rows come from
LLaVA's mix (data.llava), as for LLaVA: Qwen's own instruction data is not public; and that the
merger trains, as LLaVA's projector does in the paper (train.freeze_projector keeps it frozen).
No square padding: Qwen's processor keeps each image's aspect ratio.
"""

from ml_collections import ConfigDict

from vlguard_jax.data.config import DataConfig
from vlguard_jax.train.config import LoraConfig, ModeConfig, ModelConfig, OptimConfig, RunConfig


def get_config() -> ConfigDict:
    return RunConfig(
        epochs=3,
        global_batch=128,
        micro_batch=16,
        model=ModelConfig(checkpoint="checkpoints/qwen2.5-vl-7b-flax"),
        train=ModeConfig("lora", freeze_projector=False),
        lora=LoraConfig(rank=128, alpha=256.0, dropout=0.05),
        optim=OptimConfig(lr=2e-4, projector_lr=2e-5, warmup_ratio=0.03),
        data=DataConfig(recipe="posthoc", template="qwen2_5_vl", pad_image=False, group_by_modality=True),
    ).to_config()
