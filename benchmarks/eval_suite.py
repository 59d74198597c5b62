"""`python -m benchmarks.eval_suite --preset small|7b [--peer torch|none] [--items N] [--batch B] [--json]`

Times an evaluation end to end, as `evaluate suite` runs one: the model loaded from a converted
checkpoint, compiled, and every item answered, on synthetic items (an image and a question each)
with 256 new tokens and EOS disabled, so that both sides generate the same amount. The peer is the
authors' loop (`VLGuard_eval.py`): transformers' `LlavaForConditionalGeneration.from_pretrained`
on the same weights (exported by `conversion.flax_to_hf`), then `generate` one prompt at a time,
greedy. The ratio is the peer's seconds over ours. Each side runs once, alone in its process (the
peer in a spawned child): what is timed includes loading and compiling, which repeats cannot.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import presets
from vlguard_jax import load_model
from vlguard_jax.checkpoints.converted import save_checkpoint
from vlguard_jax.conversion.flax_to_hf import export
from vlguard_jax.generate import Generator, Sampling
from vlguard_jax.models.llava import LlavaModel
from vlguard_jax.sharding import make_mesh

NEW_TOKENS = 256
NO_EOS = -1


def build(p: presets.Preset, root: Path) -> tuple[Path, Path]:
    """A random checkpoint of the preset's shapes, converted (ours) and exported (the peer's)."""

    dtype = jax.numpy.dtype(p.dtype)
    model = LlavaModel(presets.llava(p), dtype=dtype, param_dtype=dtype)
    params = presets.random_params(model, make_mesh((1, -1, 1)))
    ckpt = save_checkpoint(root / "flax", p.config, params)
    del params
    export(ckpt, root / "hf")
    return ckpt, root / "hf"


def ours(p: presets.Preset, ckpt: Path, items: int) -> dict:

    ids, pix = presets.gen_prompts(dataclasses.replace(p, gen_batch=items))
    t0 = time.perf_counter()
    m = load_model(ckpt, dtype=jnp.dtype(p.dtype), with_tokenizer=False)
    jax.block_until_ready(m.params)
    loaded = time.perf_counter()
    gen = Generator(m.model, m.params, eos_ids=[NO_EOS], pad_id=0, batch_size=p.gen_batch, bucket=len(ids[0]))
    out = gen(ids, pix, Sampling(max_new_tokens=NEW_TOKENS))
    total = time.perf_counter() - t0
    assert all(len(r) == NEW_TOKENS for r in out), "EOS is disabled: every item runs the full length"
    return {
        "total_s": total,
        "load_s": loaded - t0,
        "generate_s": total - (loaded - t0),
        "tokens_per_s": items * NEW_TOKENS / total,
        "batch": p.gen_batch,
        "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
    }


def peer(p: presets.Preset, hf_dir: str, items: int) -> dict:
    import numpy as np
    import torch
    import transformers

    ids, pix = presets.gen_prompts(dataclasses.replace(p, gen_batch=items))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[p.dtype]
    t0 = time.perf_counter()
    model: Any = transformers.LlavaForConditionalGeneration.from_pretrained(hf_dir, dtype=dtype)
    model = model.to(device).eval()
    loaded = time.perf_counter()
    for x, image in zip(ids, pix):  # VLGuard_eval.py: one prompt at a time
        with torch.inference_mode():
            out = model.generate(
                torch.tensor(np.asarray([x]), device=device),
                pixel_values=torch.tensor(image[None], device=device, dtype=dtype),
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                eos_token_id=None,
                pad_token_id=0,
            )
        assert out.shape[1] == len(x) + NEW_TOKENS
    if device == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    return {
        "total_s": total,
        "load_s": loaded - t0,
        "generate_s": total - (loaded - t0),
        "tokens_per_s": items * NEW_TOKENS / total,
        "device": device,
        "threads": torch.get_num_threads(),
    }


def main(argv=None) -> dict:
    a = presets.arg_parser("python -m benchmarks.eval_suite", __doc__, "items", "synthetic items (default 32)")
    a.set_defaults(items=32, batch=16)
    args = a.parse_args(argv)
    p = presets.get(args.preset, args.layers, args.batch)
    out = {
        "benchmark": "eval_suite",
        "preset": args.preset,
        "layers": p.config.text.num_hidden_layers,
        "items": args.items,
        "batch": p.gen_batch,
        "new_tokens": NEW_TOKENS,
        "dtype": p.dtype,
    }
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, hf = build(p, Path(tmp))
        presets.log("checkpoints written")
        if args.peer == "torch":
            out["peer"] = presets.in_child(peer, p, str(hf), args.items)
            presets.log(f"peer: {out['peer']['total_s']:.1f} s")
        out["ours"] = ours(p, ckpt, args.items)
        presets.log(f"ours: {out['ours']['total_s']:.1f} s")
    if "peer" in out:
        out["ratio"] = out["peer"]["total_s"] / out["ours"]["total_s"]
    if args.json:
        print(json.dumps(out))
    else:
        o = out["ours"]
        print(
            f"preset {args.preset} ({out['layers']} layers), {args.items} items x {NEW_TOKENS} new tokens, "
            f"batch {p.gen_batch}, {p.dtype}, on {o['device']}"
        )
        print(
            f"  ours: {o['total_s']:.1f} s end to end (load {o['load_s']:.1f} s, compile and generate "
            f"{o['generate_s']:.1f} s), {o['tokens_per_s']:.0f} tok/s"
        )
        if "peer" in out:
            q = out["peer"]
            print(
                f"  peer (the authors' loop, one prompt at a time): {q['total_s']:.1f} s (load {q['load_s']:.1f} s), "
                f"{q['tokens_per_s']:.0f} tok/s; ratio {out['ratio']:.2f}x"
            )
    return out


if __name__ == "__main__":
    main()
