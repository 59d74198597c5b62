"""Each converter's command line, importable without jax: `vlguard-convert NAME --help` and a
mistyped flag answer before the converter loads (vlguard_jax/flags.py). `parse(NAME, argv)` is
what every converter's `main` and the `vlguard-convert` front door call."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from vlguard_jax.errors import ArgumentParser, at_least
from vlguard_jax.flags import COMPUTE_DTYPES, output

SOURCE = "source"  # the default --dtype: each tensor as the source file stores it (float64 as float32)
WEIGHT_DTYPES = tuple(sorted(COMPUTE_DTYPES))
DTYPE_CHOICES = (SOURCE, *WEIGHT_DTYPES)
PTH_DTYPES = ("float32", "float16", "bfloat16")  # flax-to-minigptv2: the .pth's tensors, its default first
LORA_MODES = ("merge", "keep")  # minigptv2: the stage-3 LoRA factors folded in, or kept beside the kernels
OVERWRITE = "replace an existing DST, once the new one is complete"
NEW_DST = "output directory (must not exist unless --overwrite)"


def _source_dtype(p: ArgumentParser) -> None:
    p.add_argument("--dtype", default=SOURCE, choices=DTYPE_CHOICES, help="default: each tensor's own precision")


def hf_to_flax(p: ArgumentParser) -> None:
    p.add_argument(
        "--src",
        required=True,
        help="llava-hf, original-LLaVA, Llama or Qwen2.5-VL checkpoint: a folder or a Hub id (org/name[@REV])",
    )
    p.add_argument("--dst", required=True, type=output, help=NEW_DST)
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE)
    _source_dtype(p)
    p.add_argument(
        "--vision-tower",
        help="CLIP folder or Hub id, for original-LLaVA checkpoints without the tower (default: their mm_vision_tower)",
    )
    for bound in ("min", "max"):
        p.add_argument(
            f"--{bound}-pixels",
            type=int,
            help=f"Qwen2.5-VL: the processor's {bound}_pixels, as AutoProcessor takes it (default: preprocessor_config.json's)",
        )


def flax_to_hf(p: ArgumentParser) -> None:
    p.add_argument("--src", required=True, help="vlguard-jax checkpoint directory")
    p.add_argument("--dst", required=True, type=output, help=NEW_DST)
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE)
    p.add_argument("--dtype", choices=WEIGHT_DTYPES, help="default: the checkpoint's dtype")
    p.add_argument("--lora", choices=("merge", "peft"), help="for a LoRA training run: merged model or PEFT adapter")


def assemble(p: ArgumentParser) -> None:
    p.add_argument(
        "--llm", required=True, help="base LLM folder or Hub id (LlamaForCausalLM, e.g. lmsys/vicuna-7b-v1.5)"
    )
    p.add_argument(
        "--vision-tower", required=True, help="CLIP folder or Hub id (e.g. openai/clip-vit-large-patch14-336)"
    )
    p.add_argument(
        "--projector",
        required=True,
        help="stage-1 mm_projector.bin or .safetensors: a file, a Hub repo holding one, or org/name[@REV]/PATH",
    )
    p.add_argument("--dst", required=True, type=output, help=NEW_DST)
    _source_dtype(p)
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE)


def minigptv2(p: ArgumentParser) -> None:
    p.add_argument(
        "--llm", required=True, help="Llama-2-7b-chat-hf folder or Hub id (e.g. meta-llama/Llama-2-7b-chat-hf)"
    )
    p.add_argument("--vision-tower", required=True, help="eva_vit_g.pth: a file or org/name[@REV]/PATH on the Hub")
    p.add_argument(
        "--checkpoint", required=True, help="minigptv2_checkpoint.pth (stage 3): a file or org/name[@REV]/PATH"
    )
    p.add_argument("--dst", required=True, type=output, help=NEW_DST)
    _source_dtype(p)
    p.add_argument(
        "--lora",
        default="keep",
        choices=LORA_MODES,
        help="keep: the q/v LoRA factors stay beside the kernels, as the authors' model holds them (training "
        "continues from them; flax-to-minigptv2 writes them back); merge: folded into the kernels",
    )
    p.add_argument(
        "--vision-heads", type=at_least(1), help="the tower's heads (default: width / 88, ViT-g's head size)"
    )
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE)


def flax_to_minigptv2(p: ArgumentParser) -> None:
    p.add_argument("--src", required=True, help="a MiniGPT-v2 checkpoint converted with --lora keep, or a run from one")
    p.add_argument("--dst", required=True, type=output, help="the .pth to write (must not exist unless --overwrite)")
    p.add_argument("--dtype", default="float32", choices=PTH_DTYPES)
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE)


# command -> (its module, what it does, its flags)
COMMANDS: dict[str, tuple[str, str, Callable[[ArgumentParser], None]]] = {
    "hf-to-flax": (
        "vlguard_jax.conversion.hf_to_flax",
        "a llava-hf, original-LLaVA or Llama (e.g. Llama Guard) PyTorch checkpoint to a vlguard-jax checkpoint",
        hf_to_flax,
    ),
    "flax-to-hf": (
        "vlguard_jax.conversion.flax_to_hf",
        "a vlguard-jax checkpoint or training run to a llava-hf directory, or a PEFT adapter",
        flax_to_hf,
    ),
    "assemble": (
        "vlguard_jax.conversion.llava_assemble",
        "the mixed recipe's start from the LLM (Vicuna), the CLIP tower and the stage-1 projector",
        assemble,
    ),
    "minigptv2": (
        "vlguard_jax.conversion.minigptv2",
        "MiniGPT-v2 from Llama-2-chat, eva_vit_g.pth and the stage-3 checkpoint",
        minigptv2,
    ),
    "flax-to-minigptv2": (
        "vlguard_jax.conversion.flax_to_minigptv2",
        "a MiniGPT-v2 checkpoint or run back to the authors' stage-3 .pth",
        flax_to_minigptv2,
    ),
}


def parse(name: str, argv: list[str]) -> argparse.Namespace:
    """`vlguard-convert NAME`'s flags from argv; a bad one is a UsageError naming it."""
    _, description, flags = COMMANDS[name]
    p = ArgumentParser(prog=f"vlguard-convert {name}", description=description)
    flags(p)
    return p.parse_args(argv)
