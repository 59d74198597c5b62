"""`vlguard-convert minigptv2 --llm DIR --vision-tower eva_vit_g.pth --checkpoint minigptv2_checkpoint.pth
--dst DST [--dtype ...] [--lora keep|merge] [--vision-heads N] [--overwrite]`

A MiniGPT-v2 checkpoint from the three files its authors' code loads (Vision-CAIR/MiniGPT-4):
- the LLM, a Hugging Face `LlamaForCausalLM` (Llama-2-7b-chat-hf), safetensors or `.bin`;
- the EVA ViT-g tower, `eva_vit_g.pth` (a flat state dict, float16). Its depth, width and MLP
  size come from the tensors; MiniGPT-v2 builds all but the last block (39 of 40), whose output is
  never used, and resizes the position grid to 448 px with PyTorch's bicubic kernel
  (`models.eva.resize_positions`). Heads default to width / 88 (ViT-g's head size);
- the stage-3 checkpoint, `minigptv2_checkpoint.pth` (`{"model": ...}`): `llama_proj`, the LoRA
  factors on q_proj and v_proj (peft-0.2.0 names), and `ln_vision` where present. `ln_vision` is
  frozen and not saved there; without it the weight is 1 and the bias 0, as initialised, and the
  log says so.

`--lora keep` (the default) keeps the q/v LoRA factors (r 64, alpha 16) beside the kernels, as the
authors' model holds them, and the config records the LoRA; `--lora merge` folds them into the
kernels (W + alpha/r * B A). Every
tensor is checked (name, shape, that the parts fit) before anything is written; the output
appears only when complete. `.pth` files are read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import transformers

from vlguard_jax import storage
from vlguard_jax.conversion import layouts, llama, llava
from vlguard_jax.conversion.commands import LORA_MODES, SOURCE, parse
from vlguard_jax.conversion.hf_to_flax import (
    Entry,
    check_dtype,
    check_plan,
    check_unused,
    plan_dtype,
    tensor_plan,
    write_checkpoint,
    write_side_files,
)
from vlguard_jax.conversion.reader import TensorSource
from vlguard_jax.errors import CheckpointError, InputError, cli
from vlguard_jax.models.config import text_from_hf
from vlguard_jax.models.eva import HEAD_DIM, EvaConfig, resize_positions
from vlguard_jax.models.minigptv2 import LORA, MiniGPTv2Config
from vlguard_jax.storage import hub
from vlguard_jax.storage.files import check_output

# The model's state dict (minigptv2_checkpoint.pth and our export), where the tower sits under
# `visual_encoder.` and the LLM under peft's wrapper (peft-0.2.0 LoRA names, no `.default`).
# eva_vit_g.pth holds the tower alone, unprefixed (`eva=""`).
PREFIXES: dict[str, Any] = dict(
    eva="visual_encoder.",
    lm="llama_model.base_model.model.model.",
    lm_head="llama_model.base_model.model.lm_head.",
)
# The EVA tower's rules under `eva`; ln_vision and llama_proj at the top.
TOWER_RULES: tuple[layouts.Rule, ...] = (
    # (pattern on our path, PyTorch name with {vision}/{lm}/{proj1}/{proj2}/{lm_head}/{eva}, transform)
    (r"vision_tower/patch_embed/kernel", "{eva}patch_embed.proj.weight", "patch"),
    (r"vision_tower/patch_embed/bias", "{eva}patch_embed.proj.bias", None),
    (r"vision_tower/(cls_token|pos_embed)", r"{eva}\1", "squeeze"),
    (r"vision_tower/blocks_(\d+)/(norm[12])/(weight|bias)", r"{eva}blocks.\1.\2.\3", None),
    (r"vision_tower/blocks_(\d+)/attn/(qkv|proj)/kernel", r"{eva}blocks.\1.attn.\2.weight", "linear"),
    (r"vision_tower/blocks_(\d+)/attn/proj/bias", r"{eva}blocks.\1.attn.proj.bias", None),
    (r"vision_tower/blocks_(\d+)/attn/(q_bias|v_bias)", r"{eva}blocks.\1.attn.\2", None),
    (r"vision_tower/blocks_(\d+)/(fc[12])/kernel", r"{eva}blocks.\1.mlp.\2.weight", "linear"),
    (r"vision_tower/blocks_(\d+)/(fc[12])/bias", r"{eva}blocks.\1.mlp.\2.bias", None),
    (r"ln_vision/(weight|bias)", r"ln_vision.\1", None),
    (r"llama_proj/(kernel)", "llama_proj.weight", "linear"),
    (r"llama_proj/bias", "llama_proj.bias", None),
)
RULES = layouts.Rules(TOWER_RULES, llama.DECODER_RULES)
IMAGE_SIZE = 448  # minigpt_v2.yaml's image_size
_BLOCK = re.compile(r"blocks\.(\d+)\.norm1\.weight$")


class ArraySource(TensorSource):
    """Tensors computed here (the resized positions, merged kernels, a default ln_vision), behind
    TensorSource's interface: name -> (shape, a function that computes it). `where` is the file
    they derive from, for messages."""

    def __init__(self, where: Path, arrays: dict[str, tuple[tuple, Callable[[], np.ndarray]]]):
        self.path, self.dir, self.files = where, where, [where]
        self._arrays = {k: fn for k, (_, fn) in arrays.items()}
        self.index = {k: where for k in arrays}
        self.shapes = {k: tuple(shape) for k, (shape, _) in arrays.items()}
        self.dtypes = {k: "float32" for k in arrays}

    def get(self, name: str) -> np.ndarray:
        return self._arrays[name]()


def tower_config(src: TensorSource, heads: int | None) -> EvaConfig:
    """The tower MiniGPT-v2 builds from `eva_vit_g.pth`'s tensors: one block fewer than the file."""
    need = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight")
    for name in need:
        if name not in src.shapes:
            raise CheckpointError(f"{src.path}: missing tensor {name!r}: not an EVA ViT state dict (--vision-tower)")
    blocks = sorted(int(m[1]) for k in src.keys() if (m := _BLOCK.match(k)))
    if len(blocks) < 2 or blocks != list(range(len(blocks))):
        raise CheckpointError(f"{src.path}: blocks {blocks[:3]}...: expected blocks 0..N-1 with N >= 2")
    width = src.shapes["cls_token"][-1]
    pos = src.shapes["pos_embed"]
    n = math.prod(pos) // max(width, 1)
    if pos[-1] != width or n < 2 or math.isqrt(n - 1) ** 2 != n - 1:
        raise CheckpointError(
            f"{src.path}: tensor 'pos_embed' has shape {tuple(pos)}: expected (1, 1 + g*g, {width}), a CLS entry "
            "and a square grid of patch positions"
        )
    heads = width // HEAD_DIM if heads is None else heads
    if heads < 1 or width % heads:
        raise InputError(f"--vision-heads {heads}: the tower's width {width} does not split into {heads} heads")
    return EvaConfig(
        hidden_size=width,
        intermediate_size=src.shapes["blocks.0.mlp.fc1.weight"][0],
        num_hidden_layers=len(blocks) - 1,
        num_attention_heads=heads,
        image_size=IMAGE_SIZE,
        patch_size=src.shapes["patch_embed.proj.weight"][-1],
    )


def plan(
    llm,
    vision_tower,
    checkpoint,
    dtype: str = SOURCE,
    vision_heads: int | None = None,
    log=print,
    lora: str = "merge",
) -> tuple[MiniGPTv2Config, list[Entry], Any]:
    """(config, tensor plan, tokenizer): everything checked, nothing written. `lora`: "merge" folds
    the factors into the kernels, "keep" keeps them beside them (the config records the LoRA)."""
    llm, vision_tower, checkpoint = Path(llm), Path(vision_tower), Path(checkpoint)
    if not llm.is_dir():
        raise CheckpointError(f"{llm}: no such directory (--llm)")
    for what, p in (("--vision-tower", vision_tower), ("--checkpoint", checkpoint)):
        if not p.is_file():
            raise CheckpointError(f"{p}: no such file ({what})")
    hf, llm_src = llama.read_llm(llm, "a LlamaForCausalLM such as Llama-2-7b-chat-hf", llava.kind_of)
    eva, ckpt = TensorSource(vision_tower), TensorSource(checkpoint)
    text = text_from_hf(hf, source=str(llm / "config.json"))
    config = MiniGPTv2Config(vision=tower_config(eva, vision_heads), text=text, image_token_index=text.vocab_size)
    proj = ckpt.shapes.get("llama_proj.weight")
    if proj is None:
        raise CheckpointError(f"{checkpoint}: missing tensor 'llama_proj.weight': not a MiniGPT-v2 checkpoint")
    width = config.vision.hidden_size
    if proj != (text.hidden_size, width * config.merge):
        raise CheckpointError(
            f"{checkpoint}: tensor 'llama_proj.weight' has shape {proj}; the parts do not fit: the tower's width "
            f"{width} x {config.merge} = {width * config.merge} must be its input, and the LLM's hidden size "
            f"{text.hidden_size} its output"
        )
    prefixes = llama.PREFIXES
    ours = dict(PREFIXES, eva="")  # the tower's names are eva_vit_g.pth's, unprefixed
    grid = config.vision.grid
    positions = ArraySource(
        vision_tower,
        {
            "pos_embed": (
                (grid * grid + 1, width),
                lambda: resize_positions(eva.get("pos_embed").reshape(-1, width).astype(np.float32), grid),
            )
        },
    )
    norm = ckpt
    if "ln_vision.weight" not in ckpt.shapes:
        log(f"{checkpoint}: no ln_vision (frozen in stage 3, not saved): weight 1, bias 0, as initialised")
        ones, zeros = (lambda: np.ones(width, np.float32)), (lambda: np.zeros(width, np.float32))
        norm = ArraySource(checkpoint, {"ln_vision.weight": ((width,), ones), "ln_vision.bias": ((width,), zeros)})
    entries, folded = [], set()
    if lora == "keep":
        config = dataclasses.replace(config, lora=LORA)
    for e in tensor_plan(config, ours, plan_dtype(dtype), lambda path: ckpt, RULES):
        path, name, transform = e.path, e.name, e.transform
        if path.startswith("vision_tower/"):
            source = eva
            if name == "pos_embed":
                source, transform = positions, None
        elif path.startswith("ln_vision/"):
            source = norm
        elif path.startswith("llama_proj/") or path.endswith(("/lora_a", "/lora_b")):
            source = ckpt
        else:
            name, transform = llama.RULES.torch_name(path, prefixes)
            source = llm_src
            folds = re.match(r"language_model/layers_(\d+)/self_attn/(q_proj|v_proj)/kernel$", path)
            if folds and lora == "merge":
                source, factors = _merged(llm_src, ckpt, name, folds, ours, checkpoint)
                folded.update((name, *factors))
        entries.append(dataclasses.replace(e, source=source, name=name, transform=transform))
    check_plan(entries, lambda e: "")
    tied = text.tie_word_embeddings
    check_unused(llm_src, entries, "a LlamaForCausalLM", lambda k: k in folded or (tied and k == "lm_head.weight"))
    unused_block = f"blocks.{config.vision.num_hidden_layers}."  # the file's last block, never built
    check_unused(eva, entries, "MiniGPT-v2's tower", lambda k: k == "pos_embed" or k.startswith(unused_block))
    check_unused(ckpt, entries, "MiniGPT-v2's stage-3 checkpoint", lambda k: k in folded)
    return config, entries, _tokenizer(llm)


def _merged(llm_src: TensorSource, ckpt: TensorSource, name: str, m: re.Match, ours: dict, checkpoint: Path):
    """(a q/v kernel with its LoRA factors folded in, PyTorch layout W + scale * B @ A; the factors'
    names)."""
    i, proj = m[1], m[2]
    base = f"{ours['lm']}layers.{i}.self_attn.{proj}."
    a, b = base + "lora_A.weight", base + "lora_B.weight"
    for factor in (a, b):
        if factor not in ckpt.shapes:
            raise CheckpointError(f"{checkpoint}: missing tensor {factor!r} (MiniGPT-v2's LoRA on {proj}, layer {i})")
    if name not in llm_src.shapes:
        raise CheckpointError(f"{llm_src.dir}: missing tensor {name!r}")
    out, inp = llm_src.shapes[name]
    expected = {a: (LORA.rank, inp), b: (out, LORA.rank)}
    for factor, shape in expected.items():
        if ckpt.shapes[factor] != shape:
            raise CheckpointError(
                f"{checkpoint}: tensor {factor!r} has shape {ckpt.shapes[factor]}, expected {shape} "
                f"(MiniGPT-v2's LoRA: rank {LORA.rank} on the LLM's {proj} {(out, inp)})"
            )

    def fold():
        w = llm_src.get(name).astype(np.float32)
        return w + LORA.scale * (ckpt.get(b).astype(np.float32) @ ckpt.get(a).astype(np.float32))

    return ArraySource(checkpoint, {name: (llm_src.shapes[name], fold)}), (a, b)


def _tokenizer(llm: Path):
    tok = transformers.AutoTokenizer.from_pretrained(llm)
    tok.pad_token = "$$"  # minigpt_base.py sets it so
    return tok


def convert(
    llm,
    vision_tower,
    checkpoint,
    dst,
    dtype: str = SOURCE,
    lora: str = "keep",
    vision_heads: int | None = None,
    overwrite: bool = False,
    log=print,
) -> MiniGPTv2Config:
    """Write DST (which must not exist unless `overwrite`) from the three files; returns the config."""
    check_dtype(dtype)
    if lora not in LORA_MODES:
        raise InputError(f"--lora must be one of {LORA_MODES}, got {lora!r}")
    llm = hub.model_dir(llm, "--llm")
    vision_tower = hub.model_file(vision_tower, "--vision-tower", ("eva_vit_g.pth",))
    checkpoint = hub.model_file(checkpoint, "--checkpoint", ("minigptv2_checkpoint.pth",))
    check_output(dst, llm, vision_tower, checkpoint, overwrite=overwrite)
    config, entries, tokenizer = plan(llm, vision_tower, checkpoint, dtype, vision_heads, log, lora)
    write_checkpoint(
        entries,
        storage.as_path(dst),
        config,
        dtype,
        lambda tmp: write_side_files(Path(llm), None, tmp, config, tokenizer),
        overwrite=overwrite,
    )
    return config


@cli
def main(argv: list[str]) -> int:
    return run(parse("minigptv2", argv))


def run(a: argparse.Namespace) -> int:
    """The command on its parsed flags (conversion.commands)."""
    config = convert(a.llm, a.vision_tower, a.checkpoint, a.dst, a.dtype, a.lora, a.vision_heads, a.overwrite)
    v = config.vision
    print(
        f"wrote {a.dst}: {config.text.num_hidden_layers}-layer Llama, {v.num_hidden_layers}-block EVA "
        f"({v.hidden_size} wide, {v.num_attention_heads} heads) at {v.image_size} px, "
        f"{config.num_image_tokens} visual tokens, LoRA {'kept' if config.lora else 'merged'}, dtype {a.dtype}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
