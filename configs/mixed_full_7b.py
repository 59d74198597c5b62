"""Mixed VLGuard full fine-tuning on 7B: VLGuard train appended to LLaVA's 665k mix, trained as
LLaVA-1.5's visual instruction tuning (scripts/v1_5/finetune.sh): from Vicuna-7B-v1.5 with the
stage-1 projector (`python -m conversion.assemble`), 1 epoch at 2e-5 for the LLM and projector
alike, global batch 128, cosine with 3% warmup, max length 2048, grouped by modality.

Unreadable mix samples are skipped and listed, as in mixed_lora_7b.
"""

from vlguard_jax.train.defaults import base_config


def get_config():
    c = base_config()
    c.model.checkpoint = "checkpoints/llava-1.5-7b-pretrain-flax"
    c.data.recipe = "mixed"
    c.data.on_bad_record = "skip"
    c.epochs = 1
    c.train.mode = "full"
    c.optim.lr = 2e-5
    c.optim.projector_lr = 2e-5
    c.micro_batch = 8
    return c
