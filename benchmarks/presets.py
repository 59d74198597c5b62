"""Benchmark shapes. `small` is fixed exactly (comparable across machines); `7b` and `13b` are
LLaVA-1.5 (CLIP ViT-L/14-336 + Vicuna) in bfloat16, for GPUs and TPUs; `minigptv2-7b` is
MiniGPT-v2 (EVA ViT-g at 448 px + Llama-2-7b, LoRA r 64 on q/v) for the training benchmark;
`--layers` shrinks the decoder."""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import multiprocessing
import sys
import time
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from vlguard_jax import sharding
from vlguard_jax.families import family_of
from vlguard_jax.models import abstract_params
from vlguard_jax.models.config import LoraSpec, TextConfig, VisionConfig
from vlguard_jax.models.eva import EvaConfig
from vlguard_jax.models.llava_config import LlavaConfig
from vlguard_jax.models.minigptv2 import MiniGPTv2Config
from vlguard_jax.models.qwen2_5_vl import TEXT_7B, Qwen2_5_VLConfig
from vlguard_jax.models.qwen_vision import QwenVisionConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    config: LlavaConfig | MiniGPTv2Config | Qwen2_5_VLConfig
    dtype: str
    batch: int
    length: int  # training tokens per row: BOS + image tokens + text
    answer: int  # supervised (labelled) text tokens at the end of each row
    lora_rank: int
    lora_alpha: float
    gen_batch: int
    gen_text: int  # prompt text tokens after BOS + image tokens
    gen_new: int
    remat: str = "none"  # decoder-layer remat policy and rows per micro-batch (on accelerators)
    micro_batch: int = 0  # 0 = the whole batch at once
    lora_targets: tuple[str, ...] = LoraSpec(1, 1.0).targets  # LLaVA's: every linear layer of the LLM
    image_key: tuple[int, ...] = ()  # the images' shape class, where a family's images differ in size

    @property
    def lora(self) -> LoraSpec:
        return LoraSpec(self.lora_rank, self.lora_alpha, targets=self.lora_targets)


def _llava(vision: dict, text: dict, vocab: int) -> LlavaConfig:
    return LlavaConfig(
        vision=VisionConfig(**vision),
        text=TextConfig(vocab_size=vocab, **text),
        image_token_index=vocab - 1,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


CLIP_L336 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
)
LLAMA_7B: dict[str, Any] = dict(  # Vicuna-7B-v1.5 and Llama-2-7b (vocabularies apart)
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    head_dim=128,
)
PRESETS = {
    "small": Preset(
        _llava(
            dict(
                hidden_size=256,
                intermediate_size=1024,
                num_hidden_layers=4,
                num_attention_heads=4,
                image_size=112,
                patch_size=14,
            ),
            dict(
                hidden_size=512,
                intermediate_size=1408,
                num_hidden_layers=8,
                num_attention_heads=8,
                num_key_value_heads=8,
                head_dim=64,
            ),
            32000,
        ),
        "float32",
        batch=8,
        length=256,
        answer=128,
        lora_rank=16,
        lora_alpha=32.0,
        gen_batch=8,
        gen_text=32,
        gen_new=32,
    ),
    # For smoke tests only.
    "tiny": Preset(
        _llava(
            dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=28,
                patch_size=14,
            ),
            dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=16,
            ),
            512,
        ),
        "float32",
        batch=8,
        length=32,
        answer=8,
        lora_rank=4,
        lora_alpha=8.0,
        gen_batch=8,
        gen_text=4,
        gen_new=4,
    ),
    "7b": Preset(
        _llava(CLIP_L336, LLAMA_7B, 32064),
        "bfloat16",
        batch=16,
        length=2048,
        answer=512,
        lora_rank=128,
        lora_alpha=256.0,
        gen_batch=64,
        gen_text=64,
        gen_new=128,
        remat="dots",
        micro_batch=4,
    ),
    "13b": Preset(
        _llava(
            CLIP_L336,
            dict(
                hidden_size=5120,
                intermediate_size=13824,
                num_hidden_layers=40,
                num_attention_heads=40,
                num_key_value_heads=40,
                head_dim=128,
            ),
            32064,
        ),
        "bfloat16",
        batch=8,
        length=2048,
        answer=512,
        lora_rank=128,
        lora_alpha=256.0,
        gen_batch=64,
        gen_text=64,
        gen_new=128,
        remat="dots",
        micro_batch=2,
    ),
    # MiniGPT-v2's stage 3 (minigptv2_finetune.yaml): 1,024 text tokens at most, LoRA r 64, alpha 16
    # on q_proj and v_proj; the batch is configs/minigptv2_posthoc_lora.py's.
    "minigptv2-7b": Preset(
        MiniGPTv2Config(vision=EvaConfig(), text=TextConfig(vocab_size=32000, **LLAMA_7B), image_token_index=32000),
        "bfloat16",
        batch=16,
        length=1024,
        answer=256,
        lora_rank=64,
        lora_alpha=16.0,
        gen_batch=16,
        gen_text=64,
        gen_new=128,
        remat="dots",
        micro_batch=4,
        lora_targets=("q_proj", "v_proj"),
    ),
    # Qwen2.5-VL-7B-Instruct at configs/qwen2_5_vl_posthoc_lora.py's settings: LoRA r 128 on every
    # linear layer of the LLM, the merger trained; the images at Qwen's fine-tuning maximum
    # (451,584 pixels: 24 x 24 merged tokens, 2,304 patches, one bucket), 2,048 tokens a row.
    "qwen2.5-vl-7b": Preset(
        Qwen2_5_VLConfig(min_pixels=28 * 28 * 16, max_pixels=28 * 28 * 576),
        "bfloat16",
        batch=16,
        length=2048,
        answer=256,
        lora_rank=128,
        lora_alpha=256.0,
        gen_batch=16,
        gen_text=64,
        gen_new=128,
        remat="dots",
        micro_batch=4,
        image_key=(24, 24),
    ),
}


def _qwen(vision: dict, text: dict) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL of these tower and decoder shapes, its image token the vocabulary's last id."""
    t = dataclasses.replace(TEXT_7B, **text)
    v = QwenVisionConfig(**vision, out_hidden_size=t.hidden_size)
    return Qwen2_5_VLConfig(vision=v, text=t, image_token_index=t.vocab_size - 1)


# The small preset's shapes on Qwen2.5-VL, for CPU figures: the same decoder (with q/k/v biases
# and M-RoPE), a 4-block windowed tower 256 wide, images of 8 x 8 merged tokens (256 patches,
# 64 image tokens, as the small LLaVA's 112 px image).
PRESETS["qwen2.5-vl-small"] = dataclasses.replace(
    PRESETS["small"],
    config=_qwen(
        dict(depth=4, hidden_size=256, intermediate_size=1024, num_heads=4, fullatt_block_indexes=(3,)),
        dict(
            vocab_size=32000,
            hidden_size=512,
            intermediate_size=1408,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=8,
            head_dim=64,
            mrope_section=(8, 12, 12),
        ),
    ),
    image_key=(8, 8),
)

# For smoke tests only: the tiny preset's run on a tiny Qwen2.5-VL (images of 4 x 4 merged tokens).
PRESETS["qwen2.5-vl-tiny"] = dataclasses.replace(
    PRESETS["tiny"],
    config=_qwen(
        dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2, fullatt_block_indexes=(1,)),
        dict(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            mrope_section=(2, 3, 3),
        ),
    ),
    image_key=(4, 4),
)

# For smoke tests only: the tiny preset's run on a tiny MiniGPT-v2.
PRESETS["minigptv2-tiny"] = dataclasses.replace(
    PRESETS["tiny"],
    config=MiniGPTv2Config(
        vision=EvaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=56
        ),
        text=TextConfig(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=16,
        ),
        image_token_index=512,
    ),
    lora_targets=("q_proj", "v_proj"),
)


def get(
    name: str, layers: int | None = None, batch: int | None = None, families: tuple[str, ...] = ("llava",)
) -> Preset:
    """The named preset; a benchmark that times only some model families names them."""
    if name not in PRESETS:
        raise SystemExit(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    p = PRESETS[name]
    family = family_of(p.config)
    if family.name not in families:
        raise SystemExit(f"preset {name!r} is a {family.label}; this benchmark times {', '.join(families)} presets")
    if layers:
        t = dataclasses.replace(p.config.text, num_hidden_layers=layers)
        p = dataclasses.replace(p, config=dataclasses.replace(p.config, text=t))
    if batch:
        p = dataclasses.replace(p, batch=batch, gen_batch=batch)
    return p


def llava(p: Preset) -> LlavaConfig:
    """The preset's config, in a benchmark that times LLaVA only (`get` refused the others)."""
    assert isinstance(p.config, LlavaConfig), f"{type(p.config).__name__} reached a LLaVA-only benchmark"
    return p.config


def accum_steps(p: Preset) -> int:
    """Micro-batches per step (the trainer's gradient accumulation)."""
    if not p.micro_batch or p.batch <= p.micro_batch:
        return 1
    if p.batch % p.micro_batch:
        raise SystemExit(f"--batch {p.batch} is not a multiple of the preset's micro-batch {p.micro_batch}")
    return p.batch // p.micro_batch


def images(p: Preset, n: int, rng) -> tuple[int, Any]:
    """(image tokens of one image, `n` random images as the family's model takes them: the
    preset's shape class, the float arrays drawn from a normal)."""
    image = family_of(p.config).image_input(p.config)
    assert image is not None, "a benchmark preset takes images"
    blank = image.blank(n, p.image_key)
    drawn = jax.tree.map(
        lambda a: rng.normal(size=a.shape).astype(a.dtype) if np.issubdtype(a.dtype, np.floating) else a, blank
    )
    return image.tokens_for(p.image_key), drawn


def text_top(c) -> int:
    """Random text ids stay below this: the vocabulary, and the image token where it is inside it."""
    return min(c.text.vocab_size - 1, c.image_token_index)


def train_batch(p: Preset, seed: int = 0) -> dict:
    """BOS + image tokens + random text; the last `answer` positions are labelled."""
    c = p.config
    rng = np.random.default_rng(seed)
    n_img, pixels = images(p, p.batch, rng)
    text = p.length - 1 - n_img
    ids = np.concatenate(
        [
            np.ones((p.batch, 1), np.int32),
            np.full((p.batch, n_img), c.image_token_index, np.int32),
            rng.integers(3, text_top(c), (p.batch, text)).astype(np.int32),
        ],
        axis=1,
    )
    labels = np.full_like(ids, -100)
    labels[:, -p.answer :] = ids[:, -p.answer :]
    return {"input_ids": ids, "labels": labels, "pixel_values": pixels}


def gen_prompts(p: Preset, seed: int = 0) -> tuple[list[list[int]], list[Any]]:
    c = p.config
    rng = np.random.default_rng(seed)
    n_img, pixels = images(p, p.gen_batch, rng)
    ids = [
        [1] + [c.image_token_index] * n_img + rng.integers(3, text_top(c), p.gen_text).tolist()
        for _ in range(p.gen_batch)
    ]
    return ids, [jax.tree.map(lambda a, i=i: a[i], pixels) for i in range(p.gen_batch)]


_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr (stdout carries the --json line)."""

    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def arg_parser(prog: str, doc: str | None, count: str, count_help: str) -> argparse.ArgumentParser:
    """The flags both throughput benchmarks take; `count` names the timed repetitions (at least 5)."""
    a = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n")[0])
    a.add_argument("--preset", default="small", choices=sorted(PRESETS))
    a.add_argument("--peer", default="none", choices=("torch", "none"))
    a.add_argument("--layers", type=int, help="decoder layers (shrinks 7b/13b for a CPU check)")
    a.add_argument("--batch", type=int)
    a.add_argument(f"--{count}", type=int, default=5, help=count_help)
    a.add_argument("--json", action="store_true")
    return a


def measure(out: dict, ours, peer, p: Preset, n: int, with_peer: bool) -> dict:
    """Fill `out` with ours, and with the peer (first, in its own process) and the tokens/s ratio."""
    if with_peer:
        out["peer"] = in_child(peer, p, n)
    out["ours"] = ours(p, n)
    if with_peer:
        out["ratio"] = out["ours"]["tokens_per_s"] / out["peer"]["tokens_per_s"]
    return out


def in_child(fn, *args) -> Any:
    """fn(*args) in a fresh spawned process, for the PyTorch peer. Each side then runs alone: in
    one process, whichever ran first left its thread pool spinning (torch's OpenMP slowed our CPU
    step from 1.8 to 2.2 s), and on a GPU the child's memory is all given back when it exits."""

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def median_time(fn, warmup: int = 1, repeats: int = 5) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times


def matmul_flops_per_s(dtype: str = "float32", n: int | None = None) -> float:
    """Measured dense matmul throughput of the default device (the compute floor's denominator),
    on random data: zeros can run faster than real data."""

    n = n or (2048 if jax.default_backend() == "cpu" else 8192)
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t, _ = median_time(lambda: f(a).block_until_ready(), warmup=1, repeats=7)
    return 2 * n**3 / t


def memory_bytes_per_s(nbytes: int | None = None) -> float:
    """Measured device memory bandwidth: an elementwise pass over a large array, counting the
    bytes read plus the bytes written (the memory floor's denominator)."""

    nbytes = nbytes or (256 << 20 if jax.default_backend() == "cpu" else 4 << 30)
    a = jax.random.normal(jax.random.key(0), (nbytes // 4,), jnp.float32)
    f = jax.jit(lambda x: x * 1.5 + 1.0)
    f(a).block_until_ready()
    t, _ = median_time(lambda: f(a).block_until_ready(), warmup=1, repeats=7)
    return 2 * a.nbytes / t


def random_params(model, mesh, seed: int = 0) -> Any:
    """Random weights for timing, N(0, 0.02) in each parameter's dtype and sharding, one small
    jitted program per distinct (shape, dtype, sharding). `init_params` (a jitted `model.init`,
    exact initialisers) took 226 s for the 7b preset on an H100 before any timing; this is 12 s
    against 31 s for `--preset 7b --layers 1` on a 2-core CPU. Values do not change the timing."""

    with sharding.use_mesh(mesh):
        leaves, treedef = jax.tree.flatten(abstract_params(model, mesh))

    @functools.cache
    def make(shape, dtype, where):
        return jax.jit(lambda k: (jax.random.normal(k, shape, jnp.float32) * 0.02).astype(dtype), out_shardings=where)

    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([make(x.shape, x.dtype, x.sharding)(k) for x, k in zip(leaves, keys)])


def hf_model(p: Preset) -> tuple[Any, str, Any]:
    """(random transformers LlavaForConditionalGeneration of the preset's shapes, device, dtype),
    built on the device: a 7B model initialised on the host takes minutes."""
    import torch
    import transformers

    torch.manual_seed(0)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[p.dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model: Any = transformers.LlavaForConditionalGeneration(hf_config(p))
        model = model.to(dtype)
    return model, device, dtype


def hf_config(p: Preset) -> Any:
    """The same shapes as a transformers LlavaConfig, for the PyTorch peer."""
    import transformers

    c = llava(p)
    t, v = c.text, c.vision
    return transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(
            hidden_size=v.hidden_size,
            intermediate_size=v.intermediate_size,
            num_hidden_layers=v.num_hidden_layers,
            num_attention_heads=v.num_attention_heads,
            image_size=v.image_size,
            patch_size=v.patch_size,
        ),
        text_config=transformers.LlamaConfig(
            vocab_size=t.vocab_size,
            hidden_size=t.hidden_size,
            intermediate_size=t.intermediate_size,
            num_hidden_layers=t.num_hidden_layers,
            num_attention_heads=t.num_attention_heads,
            num_key_value_heads=t.num_key_value_heads,
            head_dim=t.head_dim,
            max_position_embeddings=4096,
            bos_token_id=1,
            eos_token_id=2,
        ),
        image_token_index=c.image_token_index,
        vision_feature_layer=c.vision_feature_layer,
        vision_feature_select_strategy=cast(Any, c.vision_feature_select_strategy),
    )
