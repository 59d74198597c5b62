"""`python -m benchmarks.eva_tower [--size g|tiny] [--batch N] [--dtype bfloat16|float32] [--blocks N] [--json]`

Times MiniGPT-v2's vision side as the model runs it (`MiniGPTv2Model.image_features`: the EVA
ViT-g tower, ln_vision, the 1x4 patch strips and llama_proj) on random weights at 448 px. Median
of >= 5 forwards after compilation, with the model FLOPs per image and the share of the measured
matmul rate they reach: the figure that decides whether caching tower outputs during training
pays. `--blocks` shrinks the tower (39 blocks at full size) for a CPU check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import presets
from vlguard_jax import sharding
from vlguard_jax.models.config import TextConfig
from vlguard_jax.models.eva import EvaConfig
from vlguard_jax.models.minigptv2 import MiniGPTv2Config, MiniGPTv2Model

SIZES = {
    "g": EvaConfig(),  # ViT-g/14 at 448 px: 39 blocks, 1408 wide, 16 heads, MLP 6144
    "tiny": EvaConfig(hidden_size=176, intermediate_size=352, num_hidden_layers=2, num_attention_heads=2),
}
LLM_WIDTH = 4096  # llama_proj's output: Llama-2-7b's width


def tower_flops(v: EvaConfig, merge: int = 4, out: int = LLM_WIDTH) -> float:
    """Model FLOPs of one image through the tower and the projection (2 per multiply-add)."""
    return v.forward_flops() + 2.0 * (v.num_patches // merge) * (merge * v.hidden_size) * out


def run(size: str, batch: int, dtype: str, blocks: int | None, repeats: int) -> dict:
    v = SIZES[size] if blocks is None else dataclasses.replace(SIZES[size], num_hidden_layers=blocks)
    text = TextConfig(vocab_size=64, hidden_size=LLM_WIDTH, intermediate_size=64, num_hidden_layers=1)
    config = MiniGPTv2Config(vision=v, text=text, image_token_index=64)
    mesh = sharding.make_mesh((1, -1, 1))
    model = MiniGPTv2Model(config, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype), attn_impl="auto")
    params = presets.random_params(model, mesh)
    pixels = jnp.asarray(np.random.default_rng(0).normal(size=(batch, 3, v.image_size, v.image_size)), jnp.float32)
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.image_features))

    def one():
        jax.block_until_ready(forward(params, pixels))

    compile_s, _ = presets.median_time(one, warmup=0, repeats=1)
    median, times = presets.median_time(one, warmup=1, repeats=repeats)
    f = tower_flops(v) * batch
    measured = presets.matmul_flops_per_s(dtype)
    return {
        "benchmark": "eva_tower",
        "size": size,
        "blocks": v.num_hidden_layers,
        "batch": batch,
        "dtype": dtype,
        "forward_s": median,
        "forward_s_all": times,
        "first_s": compile_s,
        "images_per_s": batch / median,
        "model_flops_per_image": tower_flops(v),
        "achieved_flops_per_s": f / median,
        "utilisation_of_measured_matmul": f / median / (measured * jax.device_count()),
        "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
    }


def main(argv=None) -> dict:
    a = argparse.ArgumentParser(prog="python -m benchmarks.eva_tower", description=(__doc__ or "").split("\n\n")[1])
    a.add_argument("--size", default="g", choices=sorted(SIZES))
    a.add_argument("--batch", type=int, default=1)
    a.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    a.add_argument("--blocks", type=int, help="tower blocks (shrinks the tower for a CPU check)")
    a.add_argument("--repeats", type=int, default=5)
    a.add_argument("--json", action="store_true")
    args = a.parse_args(argv)
    out = run(args.size, args.batch, args.dtype, args.blocks, max(args.repeats, 5))
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"EVA {out['size']} ({out['blocks']} blocks) + projection, batch {out['batch']}, {out['dtype']}: "
            f"{out['forward_s'] * 1e3:.1f} ms ({out['images_per_s']:.2f} images/s; "
            f"{out['model_flops_per_image'] / 1e12:.2f} TFLOP per image; "
            f"{100 * out['utilisation_of_measured_matmul']:.0f}% of the measured matmul rate) on {out['device']}"
        )
    return out


if __name__ == "__main__":
    main()
