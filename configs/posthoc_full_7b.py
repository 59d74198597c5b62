"""Post-hoc VLGuard full fine-tuning of LLaVA-1.5-7B at 1e-5, 3 epochs."""

from vlguard_jax.train.defaults import base_config


def get_config():
    c = base_config()
    c.model.checkpoint = "checkpoints/llava-1.5-7b-flax"
    c.data.recipe = "posthoc"
    c.epochs = 3
    c.train.mode = "full"
    c.optim.lr = 1e-5
    c.optim.projector_lr = 1e-5
    c.micro_batch = 8
    return c
