"""`python -m benchmarks.compile_time --preset 7b --layers 4,8,16,32 [--forms scanned,unrolled] [--json]`

Compile time of the trainer's LoRA step (`vlguard_jax.train.jit_train_step`, with the preset's
accumulation and remat) and of the generator (`Generator`'s jitted prefill + decode loop), for
the preset's shapes at each decoder depth, with the layers scanned and unrolled. Inputs are
abstract (ShapeDtypeStructs with shardings): each program is lowered and compiled, nothing is
allocated, so 7b shapes run on a CPU. The persistent compilation cache is off. Each time is one
compile (compiles do not vary the way steps do); `lower_s` is tracing and lowering, `compile_s` is
XLA's part, and `total_s` their sum.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp

from benchmarks import presets
from vlguard_jax import sharding, train
from vlguard_jax.families import family_of
from vlguard_jax.generate import Generator, Sampling
from vlguard_jax.models import abstract_params
from vlguard_jax.models.config import LoraSpec
from vlguard_jax.models.llava import LlavaModel

FORMS = ("scanned", "unrolled")


def _model(p: presets.Preset, scanned: bool):

    dtype = jnp.dtype(p.dtype)
    return LlavaModel(
        presets.llava(p),
        dtype=dtype,
        param_dtype=dtype,
        attn_impl="auto",
        remat_policy=p.remat,
        lora=LoraSpec(p.lora_rank, p.lora_alpha),
        scan_layers=scanned,
    )


def _timed(jitted, *args) -> dict:
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    return {"lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0}


def train_step(p: presets.Preset, scanned: bool) -> dict:

    mesh = sharding.make_mesh((1, -1, 1))
    model = _model(p, scanned)
    trainable, frozen = train.partition(abstract_params(model, mesh), "lora", family_of(model.config))
    trainable = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding), trainable)
    opt = train.optimizer(train.RunConfig().optim, 1000, trainable, family_of(model.config))
    shardings = train.state_shardings(opt, trainable, mesh)
    state = train.abstract_state(opt, trainable, shardings)
    local = presets.train_batch(dataclasses.replace(p, batch=1))
    budget = train.label_budget(local["labels"], p.length)
    rows = sharding.logical_to_spec(("batch",), mesh=mesh)
    batch = {
        k: jax.ShapeDtypeStruct(
            (p.batch, *v.shape[1:]),
            v.dtype,
            sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*rows, *([None] * (v.ndim - 1)))),
        )
        for k, v in local.items()
    }
    step = train.jit_train_step(model, opt, presets.accum_steps(p), 512, mesh, shardings)
    return _timed(step, state, frozen, batch, budget)


def generator(p: presets.Preset, scanned: bool) -> dict:

    model = _model(p, scanned).clone(lora=None)
    params = abstract_params(model)
    gen = Generator(model, params, eos_ids=[2], batch_size=p.gen_batch)
    c = presets.llava(p)
    length = -(-(1 + c.num_image_tokens + p.gen_text) // gen.bucket) * gen.bucket
    b, v = p.gen_batch, c.vision
    args = (
        params,
        jax.ShapeDtypeStruct((b, length), jnp.int32),
        jax.ShapeDtypeStruct((b, length), jnp.int32),
        jax.ShapeDtypeStruct((b, v.num_channels, v.image_size, v.image_size), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.int32),
        0,
    )
    return _timed(gen._compile(Sampling(max_new_tokens=p.gen_new)), *args)


PROGRAMS = {"train_step": train_step, "generator": generator}


def main(argv=None) -> dict:
    a = argparse.ArgumentParser(prog="python -m benchmarks.compile_time", description=(__doc__ or "").split("\n")[0])
    a.add_argument("--preset", default="7b", choices=sorted(presets.PRESETS))
    a.add_argument("--layers", default="4,8,16,32", help="comma-separated decoder depths")
    a.add_argument("--forms", default=",".join(FORMS), help="scanned, unrolled or both")
    a.add_argument("--programs", default=",".join(PROGRAMS), help="train_step, generator or both")
    a.add_argument("--json", action="store_true")
    args = a.parse_args(argv)

    jax.config.update("jax_enable_compilation_cache", False)
    depths = [int(x) for x in args.layers.split(",")]
    forms = [f for f in args.forms.split(",") if f]
    programs = [x for x in args.programs.split(",") if x]
    if bad := [f for f in forms if f not in FORMS] + [x for x in programs if x not in PROGRAMS]:
        raise SystemExit(f"unknown form or program {bad[0]!r}; forms {list(FORMS)}, programs {list(PROGRAMS)}")
    out = {
        "benchmark": "compile_time",
        "preset": args.preset,
        "layers": depths,
        "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
        "results": [],
    }
    for program in programs:
        for form in forms:
            for n in depths:
                r = PROGRAMS[program](presets.get(args.preset, n), form == "scanned")
                out["results"].append({"program": program, "form": form, "layers": n, **r})
                presets.log(
                    f"{program} {form} {n} layers: {r['total_s']:.1f} s "
                    f"(lower {r['lower_s']:.1f}, compile {r['compile_s']:.1f})"
                )
    ratios = {}
    for program in programs:
        for form in forms:
            t = {r["layers"]: r["total_s"] for r in out["results"] if (r["program"], r["form"]) == (program, form)}
            ratios[f"{program}/{form}"] = t[max(depths)] / t[min(depths)]
    out["deepest_over_shallowest"] = ratios
    if args.json:
        print(json.dumps(out))
    else:
        print(f"preset {args.preset} on {out['device']}: total seconds (lower + compile) per depth")
        for key, ratio in ratios.items():
            program, form = key.split("/")
            row = [r for r in out["results"] if (r["program"], r["form"]) == (program, form)]
            cells = "  ".join(f"{r['layers']}: {r['total_s']:6.1f}" for r in row)
            print(f"  {program:10s} {form:8s} {cells}   {max(depths)}/{min(depths)} = {ratio:.2f}x")
    return out


if __name__ == "__main__":
    main()
