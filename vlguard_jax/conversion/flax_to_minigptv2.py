"""`vlguard-convert flax-to-minigptv2 --src CKPT --dst minigptv2_checkpoint.pth [--dtype ...] [--overwrite]`

A MiniGPT-v2 checkpoint in its authors' format: `{"model": state_dict}` holding what their stage-3
training saves, `llama_proj`, `ln_vision` and the LoRA factors on q_proj and v_proj under their
(peft-0.2.0) names, so their demo and evaluation scripts load it over Llama-2-chat and
eva_vit_g.pth. The source is a converted checkpoint that holds its LoRA factors (`vlguard-convert
minigptv2 --lora keep`), or a training run from one (its latest step's factors and llama_proj).
Written with torch.save to a temporary file beside DST and renamed when complete.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from vlguard_jax import storage
from vlguard_jax.checkpoints import runs
from vlguard_jax.checkpoints.converted import PARAMS_DIR, load_params
from vlguard_jax.checkpoints.ref import resolve_checkpoint
from vlguard_jax.conversion import layouts, minigptv2
from vlguard_jax.conversion.commands import PTH_DTYPES, parse
from vlguard_jax.conversion.reader import torch_module
from vlguard_jax.errors import InputError, cli
from vlguard_jax.storage.files import check_output

SAVED = ("llama_proj/", "ln_vision/")  # with the LoRA factors: what stage 3 trains and saves


def state_dict(params: Any) -> dict[str, np.ndarray]:
    """The authors' stage-3 state dict (PyTorch layouts, float32) from our parameter tree."""
    flat: dict[str, Any] = traverse_util.flatten_dict(params, sep="/")
    out = {}
    for path, value in flat.items():
        if path.startswith(SAVED) or path.endswith(("/lora_a", "/lora_b")):
            name, transform = minigptv2.RULES.torch_name(path, minigptv2.PREFIXES)
            out[name] = np.array(layouts.to_torch(np.asarray(value, np.float32), transform), order="C")  # writable
    return out


def export(src, dst, dtype: str = "float32", overwrite: bool = False) -> dict[str, np.ndarray]:
    """Write DST (refused when it exists, unless `overwrite`); returns the state dict written."""
    if dtype not in PTH_DTYPES:
        raise InputError(f"--dtype must be one of {PTH_DTYPES}, got {dtype!r}")
    ref = resolve_checkpoint(src)
    ref.family.check_export("flax_to_minigptv2", src)
    if getattr(ref.config, "lora", None) is None:
        raise InputError(
            f"{src}: its LoRA was merged into the kernels (--lora merge), so the authors' factors cannot be written; "
            "convert with --lora keep"
        )
    if storage.is_remote(dst):
        raise InputError(f"--dst {dst}: the .pth is written to a local path; copy it to the bucket afterwards")
    dst = Path(dst)
    if dst.is_dir():
        raise InputError(f"--dst {dst}: a folder; name the .pth file to write")
    check_output(dst, src, overwrite=overwrite)
    if ref.kind == "run":  # its latest step's trained factors and llama_proj over its base
        params = traverse_util.unflatten_dict(runs.load_run(ref.path, ref.step)[2])
    else:
        params = load_params(ref.path / PARAMS_DIR)
    sd = state_dict(params)
    torch = torch_module(dst)
    tensors = {k: torch.from_numpy(v).to(getattr(torch, dtype)) for k, v in sd.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    os.close(fd)
    try:
        torch.save({"model": tensors}, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is no mode for a model file
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return sd


@cli
def main(argv: list[str]) -> int:
    return run(parse("flax-to-minigptv2", argv))


def run(a: argparse.Namespace) -> int:
    """The command on its parsed flags (conversion.commands)."""
    sd = export(a.src, a.dst, a.dtype, a.overwrite)
    print(f"wrote {a.dst}: {len(sd)} tensors (llama_proj, ln_vision, LoRA on q_proj and v_proj), {a.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
