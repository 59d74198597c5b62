"""Safety and helpfulness evaluation.

  python -m vlguard_jax.evaluate --checkpoint CKPT --benchmark vlguard --subset unsafes \\
      --meta test.json --images DIR --out DIR
  python -m vlguard_jax.evaluate --checkpoint CKPT --benchmark xstest|advbench|figstep --data F.csv --out DIR
  python -m vlguard_jax.evaluate vqa --checkpoint CKPT --question-file Q --image-folder DIR --answers-file A.jsonl
  python -m vlguard_jax.evaluate score --responses FILE.json [--meta test.json] [--overwrite]
  python -m vlguard_jax.evaluate score --benchmark sqa|pope|mme|textvqa|gqa|mmbench|vizwiz --answers A.jsonl ...
  python -m vlguard_jax.evaluate suite --checkpoint CKPT --data-root DIR --out DIR [--only A,B] [--limit N]
  python -m vlguard_jax.evaluate report --runs DIR1 DIR2 ... --out report/
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

# Only light modules here: the library loads inside each command, once its flags parse, so that
# --help and a mistyped flag answer at once (vlguard_jax/flags.py).
from vlguard_jax import storage
from vlguard_jax.errors import ArgumentParser, UsageError, at_least, cli
from vlguard_jax.evaluate.helpfulness import scorers
from vlguard_jax.evaluate.judges import JUDGES, ORDERS, add_prompt_argument
from vlguard_jax.evaluate.safety.image_controls import CONTROLS
from vlguard_jax.evaluate.safety.safety_sets import ADVBENCH_ATTACKS, BENCHMARKS, TEXT_IMAGES, VLGUARD_SUBSETS
from vlguard_jax.flags import TEMPLATE_HELP, TEMPLATE_METAVAR, add_dtype, add_mesh, output


def out_dir(text: str) -> str:
    out = storage.as_path(text)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {text}: a file, not a directory")
    return text


def evaluate_main(argv) -> int:
    p = ArgumentParser(prog="python -m vlguard_jax.evaluate", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="converted checkpoint or training workdir")
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument(
        "--subset", help=f"vlguard: one of {VLGUARD_SUBSETS}; mmsafetybench: SD_TYPO (default), SD, TYPO, tiny_<kind>"
    )
    p.add_argument("--meta", help="vlguard: test.json")
    p.add_argument("--images", help="the folder (or archive) the prompts' images are under")
    p.add_argument(
        "--data",
        help="xstest / advbench / figstep CSV; mossbench information.json; vlsbench data.json; mmsafetybench "
        "processed_questions/; holisafe / custom JSON lines",
    )
    p.add_argument("--attack", choices=ADVBENCH_ATTACKS, default="vanilla")
    p.add_argument("--font", help="figstep: FreeMonoBold.ttf; mmsafetybench: ARIAL.TTF, to draw missing TYPO images")
    p.add_argument("--out", required=True, type=output)
    p.add_argument(
        "--template",
        metavar=TEMPLATE_METAVAR,
        default="auto",
        help=TEMPLATE_HELP,
    )
    p.add_argument("--max-new-tokens", type=at_least(1), default=256)
    p.add_argument(
        "--min-new-tokens",
        type=at_least(0),
        default=1,
        help="EOS is banned before this many tokens (the authors': 1, so no reply is empty)",
    )
    add_dtype(p)
    add_mesh(p)
    p.add_argument(
        "--text-image",
        choices=TEXT_IMAGES,
        default="none",
        help="text-only attacks on a VLLM: no image (the authors') or a blank white image",
    )
    p.add_argument("--batch-size", type=at_least(1), default=8)
    p.add_argument(
        "--image-control",
        choices=CONTROLS,
        help="answer an image benchmark without its real images: none (removed), blank (white), noise, "
        "or blur, each of the image's size; an --out holds one control (or real images)",
    )
    p.add_argument("--limit", type=at_least(1), help="only the first N items")
    p.add_argument(
        "--judge",
        choices=JUDGES,
        action="append",
        help="once or more. Safety judges, a verdict per response: llamaguard (Llama Guard, --judge-checkpoint), "
        "openai-safety (a chat model at the endpoint the env vars set), refusal-string (the markers, which "
        "judge beside any safety judge); every pair's agreement and kappa go in summary.json. "
        "openai-compatible: vlguard safe_safes win rate against --references, at that endpoint",
    )
    p.add_argument("--judge-checkpoint", help="converted Llama Guard checkpoint, for --judge llamaguard")
    p.add_argument("--references", help="gpt4_safe_safes.json, for --judge openai-compatible")
    add_prompt_argument(p)
    p.add_argument(
        "--judge-orders",
        type=int,
        choices=ORDERS,
        default=1,
        help="openai-compatible: 1 = gpt4_evaluator.py's single order; 2 = also the swapped order",
    )
    a = p.parse_args(argv)
    if a.benchmark == "vlguard" and a.subset not in VLGUARD_SUBSETS:
        p.error(f"--benchmark vlguard needs --subset, one of {VLGUARD_SUBSETS} (got {a.subset!r})")
    judges = a.judge or []
    if "openai-compatible" in judges and ((a.benchmark, a.subset) != ("vlguard", "safe_safes") or not a.references):
        p.error("--judge openai-compatible applies to --benchmark vlguard --subset safe_safes with --references")
    if "llamaguard" in judges and not a.judge_checkpoint:
        p.error("--judge llamaguard needs --judge-checkpoint DIR (a Llama Guard converted by conversion.hf_to_flax)")
    from vlguard_jax.evaluate.runner import Evaluation, Protocol, run
    from vlguard_jax.evaluate.shares import Share
    from vlguard_jax.runtime import maybe_initialize_distributed

    maybe_initialize_distributed()
    protocol = Protocol(
        template=a.template,
        max_new_tokens=a.max_new_tokens,
        min_new_tokens=a.min_new_tokens,
        dtype=a.dtype,
        text_image=a.text_image,
        batch_size=a.batch_size,
        image_control=a.image_control,
    )
    result = run(
        Evaluation(
            a.checkpoint,
            a.benchmark,
            out_dir(a.out),
            subset=a.subset,
            meta=a.meta,
            images=a.images,
            data=a.data,
            attack=a.attack,
            font=a.font,
            limit=a.limit,
            protocol=protocol,
            judge=tuple(judges),
            judge_checkpoint=a.judge_checkpoint,
            references=a.references,
            judge_orders=a.judge_orders,
            llamaguard_prompt=a.llamaguard_prompt,
            mesh=a.mesh,
        )
    )
    if Share.current().lead:
        print(json.dumps(result, indent=1))
    return 0


def score_main(argv) -> int:
    if "--benchmark" in argv or any(a.startswith("--benchmark=") for a in argv):
        return score_answers_main(argv)
    p = ArgumentParser(
        prog="python -m vlguard_jax.evaluate score", description="rescore a saved responses file without a model"
    )
    p.add_argument("--responses", required=True)
    p.add_argument("--meta", help="test.json, for the per-category breakdown of a VLGuard subset")
    p.add_argument("--overwrite", action="store_true", help="replace an existing .scored.json")
    a = p.parse_args(argv)
    from vlguard_jax.evaluate.runner import rescore

    result, out = rescore(a.responses, a.meta, overwrite=a.overwrite)
    print(json.dumps(result, indent=1))
    print(f"ASR {100 * result['asr']:.1f}% over {result['n']} responses; decisions in {out}")
    return 0


def score_answers_main(argv) -> int:
    """Helpfulness: the number LLaVA's scorer gives, from an answers file in LLaVA's format; the
    flags are the matching LLaVA scorer's."""
    p = ArgumentParser(
        prog="python -m vlguard_jax.evaluate score --benchmark",
        description="score helpfulness answers as LLaVA's scorers do",
    )
    p.add_argument("--benchmark", required=True, choices=scorers.SCORED)
    p.add_argument("--answers", required=True, help="answers .jsonl (LLaVA's format)")
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="score only the answered questions (an interrupted run); the output says how many of how many",
    )
    p.add_argument(
        "--base-dir",
        help="sqa: the ScienceQA folder (problems.json, pid_splits.json); mme: MME_Benchmark_release_version",
    )
    p.add_argument("--split", default="test", help="sqa: the split of pid_splits.json")
    p.add_argument("--question-file", help="pope, vizwiz, llavabench: the question .jsonl; mmbench: the .tsv")
    p.add_argument("--annotation-dir", help="pope: the coco_pope_<category>.json folder")
    p.add_argument("--annotation-file", help="textvqa: TextVQA_0.5.1_val.json; mmvet: mm-vet.json")
    p.add_argument("--questions", help="gqa: testdev_balanced_questions.json")
    p.add_argument("--context", help="llavabench: context.jsonl")
    p.add_argument("--reference", help="llavabench: answers_gpt4.jsonl")
    p.add_argument(
        "--upload-file", type=output, help="vizwiz, mmbench test: where to write the test server's upload file"
    )
    p.add_argument(
        "--grades-file", type=output, help="mmvet, llavabench: where the judge's grades are kept (resumable)"
    )
    a = p.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(scorers.ScoreInputs)}
    inputs = scorers.ScoreInputs(**{k: v for k, v in vars(a).items() if k in fields})
    lacking = scorers.missing(a.benchmark, inputs)
    if lacking is not None:
        p.error(f"--benchmark {a.benchmark} needs --{lacking.replace('_', '-')}")
    result = scorers.score(a.benchmark, inputs)
    print(json.dumps(result, indent=1))
    return 0


def vqa_main(argv) -> int:
    p = ArgumentParser(
        prog="python -m vlguard_jax.evaluate vqa",
        description="answer LLaVA's helpfulness question files in LLaVA's answers format",
    )
    p.add_argument("--checkpoint", required=True, help="converted checkpoint or training workdir")
    p.add_argument("--question-file", required=True, help=".jsonl (LLaVA's), .json (ScienceQA) or .tsv (MMBench)")
    p.add_argument("--image-folder", help="the images the questions name (not for MMBench's TSV)")
    p.add_argument("--answers-file", required=True, type=output, help="answers .jsonl; answers already there are kept")
    p.add_argument(
        "--conv-mode",
        default="auto",
        metavar=TEMPLATE_METAVAR,
        help="the prompt template, an image family's; auto (default): the one the checkpoint family's "
        "helpfulness scripts ask in",
    )
    p.add_argument("--single-pred-prompt", action="store_true", help="append the option-letter instruction")
    p.add_argument("--all-rounds", action="store_true", help="MMBench: ask once per rotation of the options")
    p.add_argument(
        "--max-new-tokens",
        type=at_least(1),
        help="default: the LLaVA script's for the question file "
        "(128 for .jsonl, model_vqa_loader; pass 1024 for MM-Vet and LLaVA-Bench, model_vqa)",
    )
    p.add_argument("--batch-size", type=at_least(1), default=8)
    add_dtype(p)
    add_mesh(p)
    p.add_argument("--limit", type=at_least(1), help="only the first N questions")
    a = p.parse_args(argv)
    from vlguard_jax.evaluate.helpfulness import vqa
    from vlguard_jax.evaluate.shares import Share
    from vlguard_jax.runtime import maybe_initialize_distributed

    maybe_initialize_distributed()
    answers = vqa.answer_question_file(
        a.checkpoint,
        a.question_file,
        a.answers_file,
        image_folder=a.image_folder,
        conv_mode=a.conv_mode,
        single_pred_prompt=a.single_pred_prompt,
        all_rounds=a.all_rounds,
        max_new_tokens=a.max_new_tokens,
        batch_size=a.batch_size,
        dtype=a.dtype,
        limit=a.limit,
        mesh=a.mesh,
    )
    if Share.current().lead:
        print(f"wrote {len(answers)} answers to {a.answers_file}")
    return 0


def suite_main(argv) -> int:
    p = ArgumentParser(
        prog="python -m vlguard_jax.evaluate suite",
        description="every benchmark found under the data root, the model loaded once",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", required=True, help="see the README's layout")
    p.add_argument("--out", required=True, type=output)
    p.add_argument("--only", help="comma-separated benchmarks, e.g. vlguard/unsafes,sqa,pope")
    p.add_argument("--limit", type=at_least(1), help="only the first N items of each benchmark")
    p.add_argument("--batch-size", type=at_least(1), default=8)
    add_dtype(p)
    add_mesh(p)
    p.add_argument("--font", help="figstep: FreeMonoBold.ttf path")
    p.add_argument(
        "--max-new-tokens",
        type=at_least(1),
        help="override every benchmark's own (quick checks only: the numbers are then not the protocols')",
    )
    a = p.parse_args(argv)
    from vlguard_jax.evaluate.report import write_report
    from vlguard_jax.evaluate.runner import Protocol
    from vlguard_jax.evaluate.shares import Share
    from vlguard_jax.evaluate.suite import run_suite
    from vlguard_jax.runtime import maybe_initialize_distributed

    maybe_initialize_distributed()
    summary = run_suite(
        a.checkpoint,
        a.data_root,
        out_dir(a.out),
        only=a.only.split(",") if a.only else None,
        limit=a.limit,
        protocol=Protocol(dtype=a.dtype, batch_size=a.batch_size),
        max_new_tokens=a.max_new_tokens,
        font=a.font,
        mesh=a.mesh,
    )
    if not Share.current().lead:  # the lead reports
        return 0
    md, png = write_report([a.out], storage.as_path(a.out) / "report", [Path(a.checkpoint).name])
    print(md.read_text())
    print(f"summary: {storage.as_path(a.out) / 'summary.json'}; report: {md}, {png}; skipped: {summary.get('skipped')}")
    return 0


def report_main(argv) -> int:
    p = ArgumentParser(prog="python -m vlguard_jax.evaluate report")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--names", nargs="+")
    p.add_argument("--out", required=True, type=output)
    a = p.parse_args(argv)
    if a.names and len(a.names) != len(a.runs):
        p.error(f"--names gives {len(a.names)} names for {len(a.runs)} --runs")
    from vlguard_jax.evaluate.report import write_report

    md, png = write_report(a.runs, out_dir(a.out), a.names)
    print(md.read_text())
    print(f"wrote {md} and {png}")
    return 0


COMMANDS = {"score": score_main, "report": report_main, "vqa": vqa_main, "suite": suite_main}


@cli
def main(argv: list[str]) -> int:
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return evaluate_main(argv)


if __name__ == "__main__":
    sys.exit(main())
