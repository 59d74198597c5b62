"""A small MiniGPT-v2 training config: post-hoc LoRA on a converted tiny MiniGPT-v2 with its own
factors, its template and its stage-3 schedule (the end-to-end and pod tests share it)."""

from ml_collections import ConfigDict

from vlguard_jax.train.config import RunConfig


def config(ck, sample, workdir, **data) -> ConfigDict:
    c = RunConfig().to_config()
    c.workdir, c.model.checkpoint = str(workdir), str(ck)
    c.model.dtype, c.model.attn_impl, c.model.remat = "float32", "xla", "none"
    c.total_steps, c.global_batch, c.micro_batch, c.checkpoint_every, c.log_every, c.loss_chunk = 2, 4, 4, 2, 1, 64
    c.lora.rank, c.lora.alpha, c.lora.targets = 64, 16.0, ("q_proj", "v_proj")
    c.optim.lr = c.optim.projector_lr = 1e-3
    c.optim.schedule, c.optim.warmup_steps, c.optim.warmup_start_lr, c.optim.min_lr = "lavis", 1, 1e-4, 1e-4
    c.optim.weight_decay, c.optim.decay_matrices_only = 0.05, True
    c.mesh.shape = (1, 1, 1)
    c.data.vlguard, c.data.vlguard_images = str(sample["train"]), str(sample["images"])
    c.data.llava, c.data.llava_images = str(sample["helpful"]), str(sample["images"])
    c.data.helpful_samples, c.data.max_length, c.data.bucket, c.data.workers = 4, 160, 32, 0
    c.data.template, c.data.pad_image = "minigptv2", False
    for k, v in data.items():
        c.data[k] = v
    return c
