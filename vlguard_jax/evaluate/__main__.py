"""Safety evaluation.

  python -m vlguard_jax.evaluate --checkpoint CKPT --benchmark vlguard --subset unsafes \\
      --meta test.json --images DIR --out DIR
  python -m vlguard_jax.evaluate --checkpoint CKPT --benchmark xstest|advbench|figstep --data F.csv --out DIR
  python -m vlguard_jax.evaluate score --responses FILE.json [--meta test.json] [--overwrite]
  python -m vlguard_jax.evaluate report --runs DIR1 DIR2 ... --out report/
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from vlguard_jax.errors import ArgumentParser, UsageError, at_least, cli
from vlguard_jax.evaluate import benchmarks
from vlguard_jax.evaluate.benchmarks import ADVBENCH_ATTACKS, BENCHMARKS, VLGUARD_SUBSETS
from vlguard_jax.evaluate.judges import ORDERS
from vlguard_jax.evaluate.report import write_report
from vlguard_jax.evaluate.runner import DTYPES, JUDGES, TEXT_IMAGES, Protocol, read_json, run, score, write_json
from vlguard_jax.evaluate.scoring import is_refusal
from vlguard_jax.files import check_output
from vlguard_jax.generate.prompts import TEMPLATE_CHOICES


def out_dir(text: str) -> str:
    if Path(text).exists() and not Path(text).is_dir():
        raise UsageError(f"--out {text}: a file, not a directory")
    return text


def evaluate_main(argv) -> int:
    p = ArgumentParser(prog="python -m vlguard_jax.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="converted checkpoint or training workdir")
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument("--subset", help=f"vlguard: one of {VLGUARD_SUBSETS}")
    p.add_argument("--meta", help="vlguard: test.json")
    p.add_argument("--images", help="vlguard: image root")
    p.add_argument("--data", help="xstest / advbench / figstep CSV")
    p.add_argument("--attack", choices=ADVBENCH_ATTACKS, default="vanilla")
    p.add_argument("--font", help="figstep: FreeMonoBold.ttf path")
    p.add_argument("--out", required=True)
    p.add_argument("--template", choices=("auto",) + TEMPLATE_CHOICES, default="auto",
                   help="auto: llava_v1 for a LLaVA (the authors'); for a text-only LLM its tokenizer's chat "
                        "template, else vicuna_v1")
    p.add_argument("--max-new-tokens", type=at_least(1), default=256)
    p.add_argument("--min-new-tokens", type=at_least(0), default=1, help="EOS is banned before this many tokens "
                   "(the authors': 1, so no reply is empty)")
    p.add_argument("--dtype", choices=DTYPES, help="compute dtype (the authors': float16); default float32 on "
                   "a CPU, bfloat16 on an accelerator")
    p.add_argument("--text-image", choices=TEXT_IMAGES, default="none",
                   help="text-only attacks on a VLLM: no image (the authors') or a blank white image")
    p.add_argument("--batch-size", type=at_least(1), default=8)
    p.add_argument("--limit", type=at_least(1), help="only the first N items")
    p.add_argument("--judge", choices=JUDGES,
                   help="llamaguard: Llama Guard's safe/unsafe verdict per response (--judge-checkpoint); "
                        "openai-compatible: vlguard safe_safes win rate against --references, judged by an "
                        "endpoint set by env vars")
    p.add_argument("--judge-checkpoint", help="converted Llama Guard checkpoint, for --judge llamaguard")
    p.add_argument("--references", help="gpt4_safe_safes.json, for --judge openai-compatible")
    p.add_argument("--judge-orders", type=int, choices=ORDERS, default=1,
                   help="openai-compatible: 1 = gpt4_evaluator.py's single order; 2 = also the swapped order")
    a = p.parse_args(argv)
    if a.benchmark == "vlguard" and a.subset not in VLGUARD_SUBSETS:
        p.error(f"--benchmark vlguard needs --subset, one of {VLGUARD_SUBSETS} (got {a.subset!r})")
    if a.judge == "openai-compatible" and ((a.benchmark, a.subset) != ("vlguard", "safe_safes") or not a.references):
        p.error("--judge openai-compatible applies to --benchmark vlguard --subset safe_safes with --references")
    if a.judge == "llamaguard" and not a.judge_checkpoint:
        p.error("--judge llamaguard needs --judge-checkpoint DIR (a Llama Guard converted by conversion.hf_to_flax)")
    protocol = Protocol(template=a.template, max_new_tokens=a.max_new_tokens, min_new_tokens=a.min_new_tokens,
                        dtype=a.dtype, text_image=a.text_image, batch_size=a.batch_size)
    result = run(a.checkpoint, a.benchmark, out_dir(a.out), subset=a.subset, meta=a.meta, images=a.images,
                 data=a.data, attack=a.attack, font=a.font, limit=a.limit, protocol=protocol, judge=a.judge,
                 judge_checkpoint=a.judge_checkpoint, references=a.references, judge_orders=a.judge_orders)
    print(json.dumps(result, indent=1))
    return 0


def score_main(argv) -> int:
    p = ArgumentParser(prog="python -m vlguard_jax.evaluate score",
                       description="rescore a saved responses file without a model")
    p.add_argument("--responses", required=True)
    p.add_argument("--meta", help="test.json, for the per-category breakdown of a VLGuard subset")
    p.add_argument("--overwrite", action="store_true", help="replace an existing .scored.json")
    a = p.parse_args(argv)
    path = Path(a.responses)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such responses file")
    responses = read_json(path, None)
    if not isinstance(responses, dict) or not all(isinstance(v, str) for v in responses.values()):
        raise ValueError(f"{a.responses}: expected a JSON object mapping keys to response strings")
    if a.meta:
        items = benchmarks.vlguard(a.meta, path.stem)
        missing = [k for k in responses if k not in {i.key for i in items}]
        if missing:
            raise ValueError(f"{a.responses}: {len(missing)} keys are not in subset {path.stem!r} of {a.meta}, "
                             f"e.g. {missing[0]!r}")
    else:
        items = [benchmarks.Item(k, "") for k in responses]
    out = check_output(path.with_name(path.stem + ".scored.json"), path, overwrite=a.overwrite)
    decisions = {k: {"response": v, "refusal": is_refusal(v)} for k, v in responses.items()}
    write_json(out, decisions)
    result = score("vlguard" if a.meta else "responses", items, responses, path.stem if a.meta else None)
    print(json.dumps(result, indent=1))
    print(f"ASR {100 * result['asr']:.1f}% over {result['n']} responses; decisions in {out}")
    return 0


def report_main(argv) -> int:
    p = ArgumentParser(prog="python -m vlguard_jax.evaluate report")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--names", nargs="+")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.names and len(a.names) != len(a.runs):
        p.error(f"--names gives {len(a.names)} names for {len(a.runs)} --runs")
    md, png = write_report(a.runs, out_dir(a.out), a.names)
    print(md.read_text())
    print(f"wrote {md} and {png}")
    return 0


@cli
def main(argv: list[str]) -> int:
    if argv and argv[0] == "score":
        return score_main(argv[1:])
    if argv and argv[0] == "report":
        return report_main(argv[1:])
    return evaluate_main(argv)


if __name__ == "__main__":
    sys.exit(main())
