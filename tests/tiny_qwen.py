"""Tiny random Qwen2.5-VL checkpoints (transformers' own model), saved and converted in-process."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import transformers
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from tests.qwen_vocab import CHAT_TEMPLATE, SPECIALS
from tests.tiny import CORPUS

BASE = 286  # the tiny byte-level BPE's own tokens; Qwen2.5-VL's specials follow, in its order
VOCAB = BASE + len(SPECIALS)
EOS, START, END, IMAGE, VIDEO = (
    BASE + SPECIALS.index(t)
    for t in ("<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
)
MIN_PIXELS, MAX_PIXELS = 28 * 28 * 4, 28 * 28 * 40  # 16 to 160 patches: small images, several buckets


def tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A tiny byte-level BPE (Qwen2's kind) trained here, with Qwen2.5-VL's special tokens after
    its own and its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=BASE, initial_alphabet=alphabet, show_progress=False)
    bpe.train_from_iterator(CORPUS * 4, trainer)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_tokens(SPECIALS, special_tokens=True)
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    tok.chat_template = CHAT_TEMPLATE
    assert len(tok) == VOCAB and tok.convert_tokens_to_ids("<|image_pad|>") == IMAGE
    return tok


def hf_config(*, tie=False, depth=3, layers=2, window=56, full=(1,)) -> transformers.Qwen2_5_VLConfig:
    return transformers.Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
            max_position_embeddings=1024,
            rms_norm_eps=1e-6,
            bos_token_id=None,
            eos_token_id=EOS,
            pad_token_id=BASE,
            tie_word_embeddings=tie,
        ),
        vision_config=dict(
            depth=depth,
            hidden_size=32,
            intermediate_size=48,
            num_heads=2,
            out_hidden_size=64,
            fullatt_block_indexes=list(full),
            window_size=window,
        ),
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=START,
        vision_end_token_id=END,
        tie_word_embeddings=tie,
    )


def hf_model(cfg, seed=0, scale=4.0):
    """A random torch Qwen2.5-VL in float32, eager attention; `scale` widens the init."""
    torch.manual_seed(seed)
    model = transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name and "ln_q" not in name:
                p.mul_(scale)
    return model


def processor() -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)


def image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


def build(tmp: Path, *, seed=0, **cfg_kw) -> SimpleNamespace:
    """A tiny Qwen2.5-VL saved under tmp/hf (transformers 5's layout) and converted to tmp/flax."""
    from vlguard_jax.conversion.hf_to_flax import convert

    cfg = hf_config(**cfg_kw)
    model = hf_model(cfg, seed=seed)
    hf_dir = Path(tmp) / "hf"
    model.save_pretrained(hf_dir)
    tokenizer().save_pretrained(hf_dir)
    processor().save_pretrained(hf_dir)
    flax_dir = Path(tmp) / "flax"
    convert(hf_dir, flax_dir, "float32")
    return SimpleNamespace(cfg=cfg, model=model, hf_dir=hf_dir, flax_dir=flax_dir)


def prompt(tokens: int, before: int, after: int, seed: int = 0) -> list[int]:
    """Random text ids around one image's `<|vision_start|>`, pads, `<|vision_end|>` (none: tokens 0)."""
    rng = np.random.default_rng(seed)
    text = lambda n: [int(t) for t in rng.integers(3, 280, n)]  # noqa: E731
    return text(before) + ([START] + [IMAGE] * tokens + [END] if tokens else []) + text(after)
