"""Mixed VLGuard full fine-tuning on 13B: the 7B recipe (mixed_full_7b) from Vicuna-13B-v1.5 and
the 13B stage-1 projector; LLaVA-1.5 trains both sizes with the same values."""

from configs import mixed_full_7b


def get_config():
    c = mixed_full_7b.get_config()
    c.model.checkpoint = "checkpoints/llava-1.5-13b-pretrain-flax"
    return c
