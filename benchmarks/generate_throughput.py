"""`python -m benchmarks.generate_throughput --preset small|7b|13b [--peer torch|none] [--json]`

Times the project's batched greedy generator (`vlguard_jax.generate.Generator`: one prefill, a
`while_loop` decode) at a fixed number of new tokens with EOS disabled. Median of >= 5 runs
after compilation. `--peer torch` runs transformers' `generate` (KV cache, greedy) on the same
shapes in a child process of the same run (see `presets.in_child`).
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp

from benchmarks import presets
from vlguard_jax import sharding
from vlguard_jax.generate import Generator, Sampling
from vlguard_jax.models.llava import LlavaModel

NO_EOS = -1  # never produced, so every row runs the full length


def weight_bytes(params) -> int:

    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))


def decode_floor(p: presets.Preset, lm_bytes: int, cache_len: int, bandwidth: float, matmul: float) -> dict:
    """The least time a decode step can take: read the language model's weights and the whole KV
    cache once (bytes / measured bandwidth), or do its FLOPs (at the measured matmul rate)."""
    t = p.config.text
    dtype_bytes = 2 if p.dtype == "bfloat16" else 4
    kv = 2 * t.num_hidden_layers * p.gen_batch * cache_len * t.num_key_value_heads * t.head_dim * dtype_bytes
    lm_params = lm_bytes // dtype_bytes
    attn = 2 * 2 * t.num_hidden_layers * cache_len * t.num_attention_heads * t.head_dim
    f = p.gen_batch * (2 * lm_params + attn)
    return {
        "kv_cache_bytes": kv,
        "decode_flops": f,
        "decode_memory_floor_s": (lm_bytes + kv) / bandwidth,
        "decode_weights_floor_s": lm_bytes / bandwidth,
        "decode_compute_floor_s": f / matmul,
    }


def ours(p: presets.Preset, repeats: int) -> dict:

    dtype = jnp.dtype(p.dtype)
    mesh = sharding.make_mesh((1, -1, 1))
    model = LlavaModel(presets.llava(p), dtype=dtype, param_dtype=dtype, attn_impl="auto")
    params = presets.random_params(model, mesh)
    prompt_len = 1 + presets.llava(p).num_image_tokens + p.gen_text
    presets.log("ours: parameters initialised")
    gen = Generator(model, params, eos_ids=[NO_EOS], pad_id=0, mesh=mesh, batch_size=p.gen_batch, bucket=prompt_len)
    ids, pix = presets.gen_prompts(p)
    s = Sampling(max_new_tokens=p.gen_new)
    t0 = time.perf_counter()
    out = gen(ids, pix, s)
    compile_s = time.perf_counter() - t0
    presets.log(f"ours: first batch (with compilation) {compile_s:.1f} s")
    assert all(len(r) == p.gen_new for r in out), "EOS is disabled: every row runs the full length"
    median, times = presets.median_time(lambda: gen(ids, pix, s), warmup=0, repeats=repeats)
    # The same generator stopped after the prefill's token: the difference is the decode loop.
    one = Sampling(max_new_tokens=1)
    gen(ids, pix, one)
    prefill, _ = presets.median_time(lambda: gen(ids, pix, one), warmup=0, repeats=repeats)
    new = p.gen_batch * p.gen_new
    text = params["language_model"]
    lm_bytes = weight_bytes(text) - weight_bytes(text["embed_tokens"])  # decode reads one embedding row
    bandwidth, matmul = presets.memory_bytes_per_s(), presets.matmul_flops_per_s(p.dtype)
    return {
        "batch_s": median,
        "batch_s_all": times,
        "compile_s": compile_s,
        "tokens_per_s": new / median,
        "prefill_s": prefill,
        "decode_step_s": (median - prefill) / (p.gen_new - 1),
        "weight_bytes": weight_bytes(params),
        "lm_weight_bytes": lm_bytes,
        "prompt_tokens": prompt_len,
        "measured_bytes_per_s": bandwidth,
        "measured_matmul_flops_per_s": matmul,
        **decode_floor(p, lm_bytes, prompt_len + p.gen_new, bandwidth, matmul),
        "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
    }


def peer(p: presets.Preset, repeats: int) -> dict:
    import numpy as np
    import torch

    model, device, dtype = presets.hf_model(p)
    model.eval()
    ids, pix = presets.gen_prompts(p)
    x = torch.tensor(np.asarray(ids), device=device)
    pixels = torch.tensor(np.stack(pix), device=device, dtype=dtype)

    def one(new=p.gen_new):
        with torch.no_grad():
            out = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                pixel_values=pixels,
                do_sample=False,
                max_new_tokens=new,
                min_new_tokens=new,
                eos_token_id=None,
                pad_token_id=0,
                use_cache=True,
            )
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    t0 = time.perf_counter()
    out = one()
    first = time.perf_counter() - t0
    presets.log(f"peer: first batch {first:.1f} s")
    assert out.shape[1] == x.shape[1] + p.gen_new
    median, times = presets.median_time(one, warmup=0, repeats=repeats)
    prefill, _ = presets.median_time(lambda: one(1), warmup=1, repeats=repeats)
    return {
        "batch_s": median,
        "batch_s_all": times,
        "first_s": first,
        "prefill_s": prefill,
        "decode_step_s": (median - prefill) / (p.gen_new - 1),
        "tokens_per_s": p.gen_batch * p.gen_new / median,
        "device": device,
        "threads": torch.get_num_threads(),
    }


def main(argv=None) -> dict:
    a = presets.arg_parser(
        "python -m benchmarks.generate_throughput", __doc__, "repeats", "timed runs (median), at least 5"
    )
    args = a.parse_args(argv)
    p = presets.get(args.preset, args.layers, args.batch)
    repeats = max(5, args.repeats)
    out = {
        "benchmark": "generate_throughput",
        "preset": args.preset,
        "layers": p.config.text.num_hidden_layers,
        "batch": p.gen_batch,
        "new_tokens": p.gen_new,
        "dtype": p.dtype,
    }
    o = presets.measure(out, ours, peer, p, repeats, args.peer == "torch")["ours"]
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"preset {args.preset} ({out['layers']} layers, batch {p.gen_batch}, prompt {o['prompt_tokens']}, "
            f"{p.gen_new} new tokens, {p.dtype}) on {o['device']}"
        )
        print(
            f"  ours: {o['tokens_per_s']:.0f} generated tok/s, {o['batch_s']:.3f} s per batch (median of {repeats}), "
            f"compile {o['compile_s']:.1f} s; weights {o['weight_bytes'] / 1e6:.0f} MB"
        )
        floor = max(o["decode_memory_floor_s"], o["decode_compute_floor_s"])
        print(
            f"  decode: {1e3 * o['decode_step_s']:.2f} ms/step (prefill {o['prefill_s']:.3f} s); floor "
            f"{1e3 * floor:.2f} ms/step = max(({o['lm_weight_bytes'] / 1e9:.2f} GB weights + "
            f"{o['kv_cache_bytes'] / 1e9:.2f} GB KV cache) / {o['measured_bytes_per_s'] / 1e9:.0f} GB/s, "
            f"{o['decode_flops'] / 1e9:.0f} GFLOP / {o['measured_matmul_flops_per_s'] / 1e12:.1f} TFLOP/s); "
            f"{o['decode_step_s'] / floor:.2f}x the floor"
        )
        if "peer" in out:
            print(
                f"  peer (transformers generate): {out['peer']['tokens_per_s']:.0f} tok/s, "
                f"{out['peer']['batch_s']:.3f} s per batch, decode {1e3 * out['peer']['decode_step_s']:.2f} ms/step; "
                f"ratio {out['ratio']:.2f}x"
            )
    return out


if __name__ == "__main__":
    main()
