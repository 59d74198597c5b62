"""Post-hoc VLGuard LoRA on LLaVA-1.5-7B: VLGuard train + 5,000 LLaVA samples, 3 epochs."""

from vlguard_jax.train.defaults import base_config


def get_config():
    c = base_config()
    c.model.checkpoint = "checkpoints/llava-1.5-7b-flax"
    c.data.recipe = "posthoc"
    c.epochs = 3
    c.train.mode = "lora"
    c.optim.lr = 2e-4
    c.optim.projector_lr = 2e-5
    return c
