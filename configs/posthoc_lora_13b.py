"""Post-hoc VLGuard LoRA on LLaVA-1.5-13B: the 7B recipe (posthoc_lora_7b) on the 13B checkpoint."""

from configs import posthoc_lora_7b


def get_config():
    c = posthoc_lora_7b.get_config()
    c.model.checkpoint = "checkpoints/llava-1.5-13b-flax"
    return c
