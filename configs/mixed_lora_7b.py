"""Mixed VLGuard LoRA: VLGuard appended to LLaVA's 665k mix, 1 epoch from the LLaVA-1.5-7B
pretrained projector stage, as in the paper's mixed fine-tuning."""
from vlguard_jax.train.defaults import base_config


def get_config():
    c = base_config()
    c.model.checkpoint = "checkpoints/llava-1.5-7b-pretrain-flax"
    c.data.recipe = "mixed"
    c.epochs = 1
    c.train.mode = "lora"
    c.optim.lr = 2e-4
    c.optim.projector_lr = 2e-5
    return c
