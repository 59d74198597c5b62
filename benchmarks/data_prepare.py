"""`python -m benchmarks.data_prepare --records 665000 [--json]`

Times the data preparation of the mixed recipe at the 665k mix's scale: VLGuard's 2,000 training
records appended to a synthetic LLaVA-format mix, read, validated, tokenized into the store and
laid out in batches (`vlguard_jax.data.pipeline.prepare`), then a second start over the same
inputs (which finds the store and tokenizes nothing). Reports both times and the peak RSS.

The synthetic mix has the published mix's shape (`synthetic_record`): about 2/3 of the records
with an image; exchanges per record 1 (35%), 2-4 (30%), 5-10 (25%), 11-20 (8%), 21-30 (2%), as the
VQA sets merged into multi-turn conversations and ShareGPT's long chats give it; questions of 4-20
words; 80% of the answers short (1-5 words, as VQAv2, GQA, OCR-VQA and the region sets) and 20%
long (30-150 words, as the detailed descriptions, complex reasoning and ShareGPT). The lengths are
calibrated on the published file's size: 665k records make 1.06 GB of JSON (llava_v1_5_mix665k.json
is 1.03 GB). Words come from a fixed synthetic lexicon, tokenized by a 32,000-entry BPE tokenizer
trained on them (about 1.3 tokens a word, as Vicuna's on English).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image
from transformers import AutoTokenizer

from benchmarks.presets import in_child
from vlguard_jax.data.config import DataConfig
from vlguard_jax.data.llava_tokens import TEMPLATES
from vlguard_jax.data.pipeline import Layout, prepare
from vlguard_jax.data.sample import write_sample
from vlguard_jax.data.sample_tokenizer import build_tokenizer
from vlguard_jax.families import LLAVA
from vlguard_jax.models.llava_config import LlavaConfig

SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "so", "vi", "de", "pa", "ho", "zu", "ba", "ge", "fi", "qu", "wy", "xo")
EXCHANGES = ((1, 1, 0.35), (2, 4, 0.30), (5, 10, 0.25), (11, 20, 0.08), (21, 30, 0.02))


def lexicon(n: int = 6000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
    return sorted(words)


def sentence(rng: random.Random, words: list[str], low: int, high: int) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(low, high))).capitalize() + "."


def exchanges(rng: random.Random) -> int:
    r = rng.random()
    for low, high, share in EXCHANGES:
        if r < share:
            return rng.randint(low, high)
        r -= share
    return EXCHANGES[-1][1]


def synthetic_record(i: int, rng: random.Random, words: list[str]) -> dict:
    conv = []
    for _ in range(exchanges(rng)):
        q = sentence(rng, words, 4, 20)
        a = sentence(rng, words, 1, 5) if rng.random() < 0.8 else sentence(rng, words, 30, 150)
        conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    record = {"id": f"syn{i}", "conversations": conv}
    if rng.random() < 2 / 3:
        record["image"] = f"img{i % 16}.jpg"
        conv[0]["value"] = "<image>\n" + conv[0]["value"]
    return record


def write_mix(path: Path, n: int, seed: int = 0) -> None:
    """The synthetic mix as one JSON list, written record by record (never all in memory)."""
    rng, words = random.Random(seed), lexicon()
    with open(path, "w") as f:
        f.write("[")
        for i in range(n):
            f.write((", " if i else "") + json.dumps(synthetic_record(i, rng, words)))
        f.write("]")


def tokenizer_for(words: list[str]) -> Any:

    rng = random.Random(1)
    corpus = [t.system for t in TEMPLATES.values()] + ["USER: ASSISTANT:"] * 100
    corpus += [" ".join(rng.choice(words) for _ in range(200)) for _ in range(4000)]
    return build_tokenizer(corpus, vocab_size=32000)


def prepare_once(data_cfg: dict, tokenizer_dir: str, workdir: str) -> dict:
    """One start, alone in a fresh process: (seconds, examples, peak RSS of that process)."""

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model_cfg = LlavaConfig(image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    cfg = DataConfig.from_config(data_cfg)
    layout = Layout(
        global_batch=128, epochs=1, max_length=cfg.max_length, pad_to="bucket", bucket=128, group_by_modality=True
    )
    t0 = time.perf_counter()
    rows = prepare(
        cfg, tokenizer, LLAVA.model_inputs(model_cfg), workdir, layout, log=lambda s: print(s, file=sys.stderr)
    )
    rows.example_at(0)  # the first epoch's order, as the first batch needs it
    return {
        "s": time.perf_counter() - t0,
        "examples": len(rows.store),
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_prepare", description=(__doc__ or "").split("\n\n")[1])
    p.add_argument("--records", type=int, default=665000)
    p.add_argument(
        "--vlguard",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/vlguard/train.json"),
        help="VLGuard's train.json (the sample's when absent)",
    )
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        tokenizer_for(lexicon()).save_pretrained(tmp / "tokenizer")
        (tmp / "images").mkdir()
        for i in range(16):
            Image.new("RGB", (8, 8)).save(tmp / "images" / f"img{i}.jpg")
        write_mix(tmp / "mix.json", a.records)
        vlguard = Path(a.vlguard) if Path(a.vlguard).is_file() else write_sample(tmp / "sample")["train"]
        for r in json.loads(vlguard.read_text()):  # stand-ins for VLGuard's images: only their presence is checked
            (tmp / "vlguard_images" / r["image"]).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(tmp / "vlguard_images" / r["image"])
        setup_s = time.perf_counter() - t0
        c = DataConfig(
            recipe="mixed",
            vlguard=str(vlguard),
            llava=str(tmp / "mix.json"),
            vlguard_images=str(tmp / "vlguard_images"),
            llava_images=str(tmp / "images"),
            on_bad_record="skip",
        )
        first = in_child(prepare_once, c.to_dict(), str(tmp / "tokenizer"), str(tmp / "work"))
        second = in_child(prepare_once, c.to_dict(), str(tmp / "tokenizer"), str(tmp / "work"))
        out = {
            "benchmark": "data_prepare",
            "records": a.records,
            "examples": first["examples"],
            "first_build_s": first["s"],
            "first_peak_rss_bytes": first["rss"],
            "second_start_s": second["s"],
            "second_peak_rss_bytes": second["rss"],
            "setup_s": setup_s,
            "mix_bytes": (tmp / "mix.json").stat().st_size,
        }
    if a.json:
        print(json.dumps(out))
    else:
        print(
            f"{a.records:,} synthetic LLaVA records ({out['mix_bytes'] / 1e9:.2f} GB) + VLGuard -> "
            f"{out['examples']:,} examples: first build {first['s']:.1f} s (peak RSS {first['rss'] / 2**30:.2f} GiB), "
            f"second start {second['s']:.1f} s (peak RSS {second['rss'] / 2**30:.2f} GiB); setup {setup_s:.0f} s"
        )
    return out


if __name__ == "__main__":
    main()
