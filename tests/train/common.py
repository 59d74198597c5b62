"""A tiny converted checkpoint, the sample data, and a small training config."""

from pathlib import Path

from tests import tiny
from vlguard_jax.data.sample import write_sample
from vlguard_jax.train.defaults import base_config


def setup(tmp: Path, **build_kw):
    ns = tiny.build(tmp / "model", scale=1.0, **build_kw)
    ns.sample = write_sample(tmp / "sample")
    return ns


def config(ns, workdir, **kw):
    c = base_config()
    c.workdir = str(workdir)
    c.model.checkpoint = str(ns.flax_dir)
    c.model.dtype = "float32"
    c.model.attn_impl = "xla"
    c.model.remat = "none"
    c.total_steps = 6
    c.global_batch = 8
    c.micro_batch = 8
    c.checkpoint_every = 2
    c.log_every = 1
    c.loss_chunk = 64
    c.lora.rank = 4
    c.lora.alpha = 8.0
    c.lora.dropout = 0.0
    c.optim.lr = 1e-2
    c.optim.projector_lr = 1e-3
    c.optim.warmup_ratio = 0.0
    c.mesh.shape = (1, 1, 1)
    c.data.vlguard = str(ns.sample["train"])
    c.data.vlguard_images = str(ns.sample["images"])
    c.data.llava = str(ns.sample["helpful"])
    c.data.llava_images = str(ns.sample["images"])
    c.data.helpful_samples = 32
    c.data.max_length = 192
    c.data.pad_to = "bucket"
    c.data.bucket = 64
    c.data.workers = 0
    for k, v in kw.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c
