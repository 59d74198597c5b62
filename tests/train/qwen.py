"""A small Qwen2.5-VL training config: post-hoc LoRA on a converted tiny Qwen2.5-VL, its chat
template, its tower frozen and its merger trained (the end-to-end and pod tests share it)."""

from ml_collections import ConfigDict

from vlguard_jax.train.config import RunConfig


def config(ck, sample, workdir, **data) -> ConfigDict:
    c = RunConfig().to_config()
    c.workdir, c.model.checkpoint = str(workdir), str(ck)
    c.model.dtype, c.model.attn_impl, c.model.remat = "float32", "xla", "none"
    c.total_steps, c.global_batch, c.micro_batch, c.checkpoint_every, c.log_every, c.loss_chunk = 2, 4, 2, 2, 1, 64
    c.lora.rank, c.lora.alpha = 8, 16.0
    c.optim.lr, c.optim.projector_lr = 1e-3, 2e-3
    c.mesh.shape = (1, 1, 1)
    c.data.vlguard, c.data.vlguard_images = str(sample["train"]), str(sample["images"])
    c.data.llava, c.data.llava_images = str(sample["helpful"]), str(sample["images"])
    c.data.helpful_samples, c.data.max_length, c.data.bucket, c.data.workers = 4, 512, 32, 0
    c.data.pad_image = False
    for k, v in data.items():
        c.data[k] = v
    return c
