"""`python -m benchmarks.conversion [--size-gb 1.2] [--json]`

Time and peak host memory (RSS) of `conversion.hf_to_flax` on a generated llava-hf checkpoint
(float32, sharded safetensors) of at least 1 GB, against the size of its largest tensor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import transformers
from flax import traverse_util
from safetensors.numpy import save_file

from vlguard_jax.conversion import llava
from vlguard_jax.data.sample_tokenizer import build_tokenizer
from vlguard_jax.models import abstract_params
from vlguard_jax.models.llava import LlavaModel
from vlguard_jax.models.llava_config import LlavaConfig

MB = 1 << 20


def write_checkpoint(path: Path, cfg, tokenizer, shard_bytes: int = 400 * MB) -> tuple[int, int]:
    """A random float32 llava-hf checkpoint for `cfg` (a transformers LlavaConfig), written shard
    by shard under the hub key names. Returns (total bytes, largest tensor bytes)."""

    path.mkdir(parents=True)
    (path / "config.json").write_text(cfg.to_json_string())
    tokenizer.save_pretrained(path)
    config = LlavaConfig.from_hf(cfg.to_dict())
    shapes = traverse_util.flatten_dict(abstract_params(LlavaModel(config)), sep="/")
    rng = np.random.default_rng(0)
    shard, weight_map, n, total, largest = {}, {}, 0, 0, 0
    for i, (p, s) in enumerate(shapes.items()):
        name, transform = llava.torch_name(p, llava.HUB)
        shape = tuple(reversed(s.shape)) if transform == "linear" else s.shape
        if transform == "patch":
            shape = (s.shape[1], 3, 14, 14)
        shard[name] = rng.standard_normal(shape, np.float32)
        total, largest = total + shard[name].nbytes, max(largest, shard[name].nbytes)
        if sum(a.nbytes for a in shard.values()) > shard_bytes or i == len(shapes) - 1:
            n += 1
            save_file(shard, path / f"model-{n}.safetensors")
            weight_map.update({k: f"model-{n}.safetensors" for k in shard})
            shard = {}
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return total, largest


def make_checkpoint(path: Path, size_gb: float) -> tuple[int, int]:
    """About `size_gb` of decoder layers at 2048 wide; returns (total bytes, largest tensor bytes)."""

    tok = build_tokenizer(["a chat between a user and an assistant"] * 4, vocab_size=300)
    layers = max(1, int(size_gb * 1024 / 112))  # ~112 MB per decoder layer at these widths
    cfg = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=56,
            patch_size=14,
        ),
        text_config=transformers.LlamaConfig(
            vocab_size=16384,
            hidden_size=2048,
            intermediate_size=2816,
            num_hidden_layers=layers,
            num_attention_heads=16,
            num_key_value_heads=16,
            head_dim=128,
        ),
        image_token_index=len(tok) - 1,
    )
    return write_checkpoint(path, cfg, tok)


def main(argv=None) -> dict:
    a = argparse.ArgumentParser(prog="python -m benchmarks.conversion", description=(__doc__ or "").split("\n")[0])
    a.add_argument("--size-gb", type=float, default=1.2)
    a.add_argument("--json", action="store_true")
    args = a.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        total, largest = make_checkpoint(tmp / "hf", args.size_gb)
        # One-time initialisation (jax, orbax, tensorstore) happens on a first tiny conversion; then
        # the kernel's RSS high-water mark is reset and the real conversion is measured.
        script = textwrap.dedent(f"""
            import json, time
            from benchmarks.conversion import make_checkpoint
            from vlguard_jax.conversion.hf_to_flax import convert
            make_checkpoint(__import__("pathlib").Path({str(tmp / "warm")!r}), 0.01)
            convert({str(tmp / "warm")!r}, {str(tmp / "warm_out")!r}, "float32")
            status = lambda k: int(dict(l.split(":", 1) for l in open("/proc/self/status"))[k].split()[0]) * 1024
            open("/proc/self/clear_refs", "w").write("5")
            base = status("VmRSS")
            t0 = time.perf_counter()
            convert({str(tmp / "hf")!r}, {str(tmp / "out")!r}, "bfloat16")
            print(json.dumps({{"seconds": time.perf_counter() - t0, "base": base, "peak": status("VmHWM")}}))
        """)
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
        )
        if out.returncode != 0:
            raise SystemExit(out.stderr[-3000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
    result = {
        "benchmark": "conversion",
        "checkpoint_mb": total / MB,
        "largest_tensor_mb": largest / MB,
        "seconds": r["seconds"],
        "peak_rss_growth_mb": (r["peak"] - r["base"]) / MB,
        "mb_per_s": total / MB / r["seconds"],
        "dtype_out": "bfloat16",
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"converted {result['checkpoint_mb']:.0f} MB (largest tensor {result['largest_tensor_mb']:.0f} MB) to "
            f"bfloat16 in {result['seconds']:.1f} s ({result['mb_per_s']:.0f} MB/s); peak RSS growth "
            f"{result['peak_rss_growth_mb']:.0f} MB"
        )
    return result


if __name__ == "__main__":
    main()
