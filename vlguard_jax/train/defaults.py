"""The base training config that every file in `configs/` starts from (big_vision style).

Every key exists here, so a misspelt override (`--config.optim.lr_typo=1`) is an error.
Values follow VLGuard (ICML 2024) and LLaVA-1.5's fine-tuning scripts.
"""

from __future__ import annotations

import ml_collections

from vlguard_jax.data.config import DataConfig
from vlguard_jax.models.stacking import DEFAULT_SCAN


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = ""
    c.seed = 0
    c.epochs = 3
    c.total_steps = -1  # > 0 overrides epochs
    c.checkpoint_every = 100
    c.keep_checkpoints = 2
    c.log_every = 10
    c.global_batch = 128
    c.micro_batch = 16  # rows per accumulation step (global); global_batch / micro_batch steps
    c.loss_chunk = 512  # sequence positions per lm_head chunk in the loss
    c.allow_resume_changes = False  # resume a workdir whose run had another base, data or settings

    c.model = ml_collections.ConfigDict()
    c.model.checkpoint = ""  # a directory made by conversion.hf_to_flax
    c.model.dtype = "bfloat16"  # compute dtype, and the dtype frozen weights are kept in
    c.model.attn_impl = "auto"
    c.model.remat = "full"  # per decoder layer: none | full | dots | dots_all
    c.model.scan_layers = (
        DEFAULT_SCAN.value
    )  # auto | on | off: one scanned layer (auto: from 16 layers; models.stacking)

    c.train = ml_collections.ConfigDict()
    c.train.mode = "lora"  # lora | full (the vision tower is always frozen)

    c.lora = ml_collections.ConfigDict()
    c.lora.rank = 128
    c.lora.alpha = 256.0
    c.lora.dropout = 0.05
    c.lora.targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 2e-4
    c.optim.projector_lr = 2e-5
    c.optim.weight_decay = 0.0
    c.optim.warmup_ratio = 0.03
    c.optim.grad_clip = 1.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (1, -1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices

    c.data = ml_collections.ConfigDict(DataConfig().to_dict())  # typed, with its defaults: data/config.py
    return c
