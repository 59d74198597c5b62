"""`python -m benchmarks.train_throughput --preset small|7b|13b|minigptv2-7b|qwen2.5-vl-7b [--peer torch|none] [--scan_layers auto|on|off|ab] [--json]`

Times the trainer's own jitted LoRA step (`vlguard_jax.train.jit_train_step`) on its real
sharded state: random base weights in the compute dtype, float32 LoRA and projector, AdamW
moments for those only. Median of >= 5 steps after compilation; compilation timed separately.
With `--peer torch`, transformers' LlavaForConditionalGeneration + PEFT LoRA (same targets, rank,
data) runs in a child process of the same run (see `presets.in_child`), and the ratio is printed.
`--scan_layers ab` times scanned against unrolled decoder layers, their steps interleaved.
MiniGPT-v2 presets time the same step on its model (LoRA on q/v, llama_proj trained, the EVA
tower frozen), and Qwen2.5-VL's on its (LoRA on the LLM, the merger trained, the windowed tower
frozen, images of one bucket, MFU from the tower's real FLOPs over the bucket); they have no
PyTorch peer.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import presets
from vlguard_jax import sharding, train
from vlguard_jax.families import LLAVA, MINIGPTV2, QWEN2_5_VL, family_of
from vlguard_jax.runtime import peak_flops
from vlguard_jax.train import flops


def _built(p: presets.Preset, scanned: bool):
    """(one timed step as a closure, its compile time, the model's FLOPs per step, the budget)."""

    dtype = jnp.dtype(p.dtype)
    mesh = sharding.make_mesh((1, -1, 1))
    model = family_of(p.config).build(
        p.config,
        dtype=dtype,
        param_dtype=dtype,
        attn_impl="auto",
        remat_policy=p.remat,
        lora=p.lora,
        scan_layers=scanned,
    )
    params = presets.random_params(model, mesh)
    trainable, frozen = train.partition(params, "lora", family_of(model.config))
    presets.log(f"ours ({'scanned' if scanned else 'unrolled'}): parameters initialised")
    trainable = jax.jit(lambda t: train.cast_tree(t, jnp.float32))(trainable)
    opt = train.optimizer(
        train.RunConfig().optim, 1000, trainable, family_of(model.config)
    )  # the paper's LoRA optimizer settings
    state, shardings = train.init_state(opt, trainable, mesh)
    del trainable, params
    step = train.jit_train_step(model, opt, presets.accum_steps(p), 512, mesh, shardings)
    local = presets.train_batch(p)
    budget = train.label_budget(local["labels"], p.length)
    batch = train.global_batch(local, mesh)
    box: dict[str, Any] = {"state": state}

    def one():
        box["state"], metrics = step(box["state"], frozen, batch, budget)
        jax.block_until_ready(metrics["loss"])
        box["loss"] = metrics["loss"]

    t0 = time.perf_counter()
    one()
    compile_s = time.perf_counter() - t0
    presets.log(f"ours: first step (with compilation) {compile_s:.1f} s")
    image = family_of(p.config).image_input(p.config)
    slots = image.rule.room_of(local["pixel_values"]) if image is not None else 0
    f = flops.train_step(
        p.config,
        p.batch,
        p.length,
        "lora",
        p.lora_rank,
        head_positions=budget,
        lora_targets=p.lora_targets,
        image_slots=slots,
    )
    return one, compile_s, f, box


def ours(p: presets.Preset, steps: int, scanned: bool) -> dict:

    one, compile_s, f, box = _built(p, scanned)
    median, times = presets.median_time(one, warmup=1, repeats=steps)
    tokens = p.batch * p.length
    peak = peak_flops()
    measured = presets.matmul_flops_per_s(p.dtype)
    return {
        "step_s": median,
        "step_s_all": times,
        "compile_s": compile_s,
        "tokens_per_s": tokens / median,
        "scan_layers": scanned,
        "model_flops_per_step": f,
        "achieved_flops_per_s": f / median,
        "mfu": f / median / (peak * jax.device_count()) if peak else None,
        "measured_matmul_flops_per_s": measured,
        "utilisation_of_measured_matmul": f / median / (measured * jax.device_count()),
        "floor_step_s": f / (measured * jax.device_count()),
        "floor_tokens_per_s": tokens / (f / (measured * jax.device_count())),
        "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
        "loss": float(box["loss"]),
    }


def scan_ab(p: presets.Preset, rounds: int) -> dict:
    """Scanned against unrolled layers, interleaved: each round times one step of each, in
    alternating order, so drift in the machine's speed falls on both alike."""
    arms = {"scanned": _built(p, True), "unrolled": _built(p, False)}
    times = {k: [] for k in arms}
    for arm in arms.values():
        arm[0]()  # warm-up
    for r in range(rounds):
        for k in ("scanned", "unrolled") if r % 2 == 0 else ("unrolled", "scanned"):
            t0 = time.perf_counter()
            arms[k][0]()
            times[k].append(time.perf_counter() - t0)
    out = {
        k: {
            "step_s": float(np.median(t)),
            "step_s_all": t,
            "compile_s": arms[k][1],
            "tokens_per_s": p.batch * p.length / float(np.median(t)),
        }
        for k, t in times.items()
    }
    out["scanned_over_unrolled_step_s"] = out["scanned"]["step_s"] / out["unrolled"]["step_s"]
    return out


def peer(p: presets.Preset, steps: int) -> dict:
    import peft
    import torch

    model, device, dtype = presets.hf_model(p)
    if p.remat != "none":  # what LLaVA's own LoRA scripts do; without it a 7B batch does not fit
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    model = peft.get_peft_model(
        model,
        peft.LoraConfig(
            r=p.lora_rank,
            lora_alpha=cast(Any, p.lora_alpha),  # peft types it int; it takes any number
            lora_dropout=0.0,
            target_modules=targets,
            modules_to_save=["multi_modal_projector"],
        ),
    )
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    b = {k: torch.tensor(v).to(device) for k, v in presets.train_batch(p).items()}
    b["pixel_values"] = b["pixel_values"].to(dtype)
    b["input_ids"], b["labels"] = b["input_ids"].long(), b["labels"].long()
    model.train()
    presets.log("peer: model built")

    def one():
        loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    one()
    first = time.perf_counter() - t0
    presets.log(f"peer: first step {first:.1f} s")
    median, times = presets.median_time(one, warmup=0, repeats=steps)
    return {
        "step_s": median,
        "step_s_all": times,
        "first_step_s": first,
        "tokens_per_s": p.batch * p.length / median,
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gradient_checkpointing": p.remat != "none",
    }


def main(argv=None) -> dict:
    a = presets.arg_parser(
        "python -m benchmarks.train_throughput", __doc__, "steps", "timed steps (median), at least 5"
    )
    a.add_argument(
        "--scan_layers",
        default="auto",
        choices=("auto", "on", "off", "ab"),
        help="the decoder layers' form (auto as in training), or ab: both, interleaved",
    )
    args = a.parse_args(argv)
    p = presets.get(args.preset, args.layers, args.batch, families=(LLAVA.name, MINIGPTV2.name, QWEN2_5_VL.name))
    if args.peer == "torch" and family_of(p.config) is not LLAVA:
        raise SystemExit(
            f"preset {args.preset!r} has no PyTorch peer (transformers has no MiniGPT-v2); use --peer none"
        )
    steps = max(5, args.steps)
    out = {
        "benchmark": "train_throughput",
        "preset": args.preset,
        "layers": p.config.text.num_hidden_layers,
        "batch": p.batch,
        "length": p.length,
        "lora_rank": p.lora_rank,
        "lora_targets": list(p.lora_targets),
        "dtype": p.dtype,
        "remat": p.remat,
        "accum": presets.accum_steps(p),
    }
    if args.scan_layers == "ab":
        out["scan_ab"] = scan_ab(p, steps)
        ab = out["scan_ab"]
        print(
            json.dumps(out)
            if args.json
            else f"preset {args.preset}, {steps} interleaved rounds: scanned {ab['scanned']['step_s']:.3f} s/step, "
            f"unrolled {ab['unrolled']['step_s']:.3f} s/step (medians); scanned/unrolled "
            f"{ab['scanned_over_unrolled_step_s']:.3f}"
        )
        return out
    scanned = family_of(p.config).wants_scan(args.scan_layers, p.config)
    presets.measure(out, lambda p, n: ours(p, n, scanned), peer, p, steps, args.peer == "torch")
    if args.json:
        print(json.dumps(out))
    else:
        o = out["ours"]
        print(
            f"preset {args.preset} ({out['layers']} layers, batch {p.batch} x {p.length} in {out['accum']} "
            f"micro-batches, remat {p.remat}, {p.dtype}) on {o['device']}"
        )
        print(
            f"  ours: {o['tokens_per_s']:.0f} tok/s, step {o['step_s']:.3f} s (median of {steps}), "
            f"compile {o['compile_s']:.1f} s, MFU {o['mfu'] if o['mfu'] is None else round(100 * o['mfu'], 1)}%"
        )
        print(
            f"  floor: {o['floor_tokens_per_s']:.0f} tok/s ({o['model_flops_per_step'] / 1e9:.0f} GFLOP/step at a "
            f"measured {o['measured_matmul_flops_per_s'] / 1e9:.0f} GFLOP/s matmul)"
        )
        if "peer" in out:
            print(
                f"  peer (transformers + PEFT): {out['peer']['tokens_per_s']:.0f} tok/s, step "
                f"{out['peer']['step_s']:.3f} s; ratio {out['ratio']:.2f}x"
            )
    return out


if __name__ == "__main__":
    main()
