"""Mixed VLGuard full fine-tuning: VLGuard appended to the 665k mix, 1 epoch at 2e-5."""
from vlguard_jax.train.defaults import base_config


def get_config():
    c = base_config()
    c.model.checkpoint = "checkpoints/llava-1.5-7b-pretrain-flax"
    c.data.recipe = "mixed"
    c.epochs = 1
    c.train.mode = "full"
    c.optim.lr = 2e-5
    c.optim.projector_lr = 2e-5
    c.micro_batch = 8
    return c
