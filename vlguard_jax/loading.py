"""`load_model`: a converted checkpoint directory -> model, parameters, config, tokenizer."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vlguard_jax.checkpoint import PARAMS_DIR, load_params, param_metadata
from vlguard_jax.models import LlavaModel, abstract_params
from vlguard_jax.models.config import LlavaConfig

MODEL_CONFIG = "model_config.json"


class Loaded(NamedTuple):
    model: LlavaModel
    params: Any
    config: LlavaConfig
    tokenizer: Any


def load_model(path, mesh=None, dtype=jnp.bfloat16, param_dtype=None, attn_impl=None,
               remat_policy: str = "none", with_tokenizer: bool = True) -> Loaded:
    """Load a checkpoint written by `conversion.hf_to_flax`.

    `dtype` is the compute dtype; `param_dtype` defaults to the dtype the checkpoint was saved in.
    With a `mesh`, every parameter is restored directly into its sharded layout: no host ever
    holds the whole model.
    """
    path = Path(path)
    if not (path / MODEL_CONFIG).exists():
        raise FileNotFoundError(f"{path}: no {MODEL_CONFIG}; is this a vlguard-jax checkpoint "
                                "(made by python -m conversion.hf_to_flax)?")
    config = LlavaConfig.load(path / MODEL_CONFIG)
    if param_dtype is None:
        saved = jax.tree.leaves(param_metadata(path / PARAMS_DIR))
        param_dtype = saved[0].dtype
    model = LlavaModel(config, dtype=dtype, param_dtype=param_dtype, attn_impl=attn_impl,
                       remat_policy=remat_policy)
    abstract = abstract_params(model, mesh)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract)
    params = load_params(path / PARAMS_DIR, abstract)
    tokenizer = None
    if with_tokenizer and any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model")):
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
    return Loaded(model, params, config, tokenizer)
