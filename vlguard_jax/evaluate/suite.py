"""The paper's table in one command: every safety and helpfulness benchmark found under a data
root, with the model loaded and compiled once, each resumable, into one summary.json and a report.

The data root follows LLaVA's `playground/data/eval` layout and the safety releases' names; each
benchmark runs when all of its files are there (`LAYOUT`, also in the README). Outputs in OUT:
safety as `evaluate` writes them (OUT/<benchmark>/<subset>.json), helpfulness answers in LLaVA's
format (OUT/answers/<name>.jsonl), uploads for the test servers (OUT/upload/), summary.json with
an entry per benchmark, and the report (OUT/report/).

An OUT in gs:// or s3:// is worked in a local mirror (storage.Mirror): what is there is brought
back first, and everything is copied up after each benchmark and when the suite stops, however it
stops. A run killed outright resumes from the last benchmark it finished.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp

from vlguard_jax import sharding, storage
from vlguard_jax.checkpoints.ref import CheckpointRef, resolve_checkpoint
from vlguard_jax.errors import InputError, MissingFileError
from vlguard_jax.evaluate.helpfulness import scorers, vqa
from vlguard_jax.evaluate.judges.gpt4_judge import JudgeNotConfigured
from vlguard_jax.evaluate.judges.gpt4_judge import settings as judge_settings
from vlguard_jax.evaluate.runner import SUMMARY, Evaluation, Protocol, claim_output, run, update_summary
from vlguard_jax.evaluate.shares import Share
from vlguard_jax.families import family_of
from vlguard_jax.generate import load_generator
from vlguard_jax.storage.files import read_json


@dataclasses.dataclass(frozen=True)
class Safety:
    benchmark: str
    files: tuple  # relative to the data root
    kw: tuple = ()  # runner.run's subset / attack


@dataclasses.dataclass(frozen=True)
class Helpfulness:
    questions: str  # the question file
    images: str | None  # the image folder
    needs: tuple  # the scorer's files
    single_pred: bool = False
    max_new_tokens: int | None = None  # the script's, else vqa.MAX_NEW_TOKENS by file kind
    judged: bool = False  # GPT-4 graded: only with a judge endpoint


SAFETY = {
    "vlguard/unsafes": Safety("vlguard", ("vlguard/test.json", "vlguard/test"), (("subset", "unsafes"),)),
    "vlguard/safe_unsafes": Safety("vlguard", ("vlguard/test.json", "vlguard/test"), (("subset", "safe_unsafes"),)),
    "vlguard/safe_safes": Safety("vlguard", ("vlguard/test.json", "vlguard/test"), (("subset", "safe_safes"),)),
    "xstest": Safety("xstest", ("xstest/xstest_prompts.csv",)),
    "advbench/vanilla": Safety("advbench", ("advbench/harmful_behaviors.csv",), (("attack", "vanilla"),)),
    "advbench/suffix": Safety("advbench", ("advbench/harmful_behaviors.csv",), (("attack", "suffix"),)),
    "figstep": Safety("figstep", ("figstep/safebench.csv",)),
    "mossbench": Safety("mossbench", ("mossbench/images_information/information.json", "mossbench")),
    "vlsbench": Safety("vlsbench", ("vlsbench/data.json", "vlsbench")),
    "holisafe": Safety("holisafe", ("holisafe/holisafe.jsonl", "holisafe")),
    "mmsafetybench": Safety("mmsafetybench", ("mmsafetybench/data/processed_questions", "mmsafetybench/data/imgs")),
}
IMAGE_SETS = ("vlguard", "figstep", "mossbench", "vlsbench", "holisafe", "mmsafetybench")
WIN_RATE_REFERENCES = "vlguard/gpt4_safe_safes.json"  # the release's GPT-4V answers, for the win rate  # safety sets whose prompts come with an image
HELPFULNESS = {
    "sqa": Helpfulness(
        "scienceqa/llava_test_CQM-A.json",
        "scienceqa/images/test",
        ("scienceqa/problems.json", "scienceqa/pid_splits.json"),
        single_pred=True,
    ),
    "pope": Helpfulness("pope/llava_pope_test.jsonl", "pope/val2014", ("pope/coco",)),
    "mme": Helpfulness(
        "MME/llava_mme.jsonl", "MME/MME_Benchmark_release_version", ("MME/MME_Benchmark_release_version",)
    ),
    "textvqa": Helpfulness(
        "textvqa/llava_textvqa_val_v051_ocr.jsonl", "textvqa/train_images", ("textvqa/TextVQA_0.5.1_val.json",)
    ),
    "gqa": Helpfulness(
        "gqa/llava_gqa_testdev_balanced.jsonl", "gqa/data/images", ("gqa/data/testdev_balanced_questions.json",)
    ),
    "mmbench": Helpfulness("mmbench/mmbench_dev_20230712.tsv", None, (), single_pred=True),
    "vizwiz": Helpfulness("vizwiz/llava_test.jsonl", "vizwiz/test", ()),
    "mmvet": Helpfulness(
        "mm-vet/llava-mm-vet.jsonl", "mm-vet/images", ("mm-vet/mm-vet.json",), max_new_tokens=1024, judged=True
    ),
    "llavabench": Helpfulness(
        "llava-bench-in-the-wild/questions.jsonl",
        "llava-bench-in-the-wild/images",
        ("llava-bench-in-the-wild/context.jsonl", "llava-bench-in-the-wild/answers_gpt4.jsonl"),
        max_new_tokens=1024,
        judged=True,
    ),
}
# The number each benchmark contributes to the paper's table (a path into its metrics).
HEADLINE = {
    "sqa": ("img_accuracy",),
    "pope": ("f1",),
    "mme": ("perception",),
    "textvqa": ("accuracy",),
    "gqa": ("accuracy",),
    "mmbench": ("circular_accuracy",),
    "mmvet": ("total",),
    "llavabench": ("all", "relative"),
}
LAYOUT = {
    **{k: v.files for k, v in SAFETY.items()},
    **{k: (v.questions,) + ((v.images,) if v.images else ()) + v.needs for k, v in HELPFULNESS.items()},
}


def score_inputs(
    name: str, answers_file, root: Path, upload_dir: Path, grades: Path, allow_partial: bool
) -> scorers.ScoreInputs:
    """The scorer's inputs (`helpfulness.scorers.ScoreInputs`) for benchmark `name` in the suite's
    DATA_ROOT layout: its question file and the files in `HELPFULNESS[name].needs`."""
    if name not in HELPFULNESS:
        raise InputError(f"unknown helpfulness benchmark {name!r}")
    h = HELPFULNESS[name]
    q, need = str(root / h.questions), [str(root / n) for n in h.needs] + [None, None]  # need: its files, then None
    where = {
        "sqa": dict(base_dir=str(root / "scienceqa")),
        "pope": dict(question_file=q, annotation_dir=need[0]),
        "mme": dict(base_dir=need[0]),
        "textvqa": dict(annotation_file=need[0]),
        "gqa": dict(questions=need[0]),
        "mmbench": dict(question_file=q),  # the dev split's accuracy; test uploads: `evaluate score`
        "vizwiz": dict(question_file=q, upload_file=str(upload_dir / "vizwiz.json")),
        "mmvet": dict(annotation_file=need[0], grades_file=str(grades / "mmvet.json")),
        "llavabench": dict(
            question_file=q, context=need[0], reference=need[1], grades_file=str(grades / "llavabench.json")
        ),
    }
    return scorers.ScoreInputs(answers=str(answers_file), allow_partial=allow_partial, **where[name])


def score(
    name: str,
    answers: list[dict],
    answers_file,
    root: Path,
    upload_dir: Path,
    grades: Path,
    allow_partial: bool = False,
) -> dict:
    """A helpfulness benchmark's metrics (or upload file) from its answers (those of `answers_file`
    this run asked; `allow_partial`: a --limit run, which answers the first questions only), by
    the one scorer entry (`helpfulness.scorers.score`), with the suite's additions: POPE's mean F1
    over its categories, the number of VizWiz answers uploaded."""
    inputs = score_inputs(name, answers_file, root, upload_dir, grades, allow_partial)
    m = scorers.score(name, inputs, answers=answers)
    if name == "pope":
        f1s = [c["f1"] for c in m["by_category"].values() if c["f1"] is not None]
        return dict(m, f1=100 * sum(f1s) / len(f1s) if f1s else None)
    if name == "vizwiz":
        return dict(m, n=len(answers))
    return m


def plan(root: Path, only: list[str] | None, text_only: bool = False) -> tuple[list[str], dict[str, str]]:
    """(benchmarks to run, {benchmark: why it is skipped}). A text-only LLM runs the text-only
    safety sets alone (the paper's base-LLM rows)."""
    names = list(SAFETY) + list(HELPFULNESS)
    unknown = [n for n in only or [] if n not in names]
    if unknown:
        raise InputError(f"--only {unknown[0]!r}: not a suite benchmark; choose from {names}")
    todo, skipped = [], {}
    try:
        judge_settings()
        judge = True
    except JudgeNotConfigured:
        judge = False
    for name in names:
        if only and name not in only:
            continue
        missing = [f for f in LAYOUT[name] if not (root / f).exists()]
        if text_only and (name in HELPFULNESS or SAFETY[name].benchmark in IMAGE_SETS):
            skipped[name] = "a text-only LLM: this benchmark asks about images"
        elif missing:
            skipped[name] = f"missing {root / missing[0]}"
        elif name in HELPFULNESS and HELPFULNESS[name].judged and not judge:
            skipped[name] = "GPT-4 graded: set VLGUARD_JUDGE_URL and VLGUARD_JUDGE_MODEL"
        else:
            todo.append(name)
    return todo, skipped


def run_suite(
    checkpoint: CheckpointRef | str,
    data_root,
    out,
    *,
    only=None,
    limit: int | None = None,
    protocol: Protocol = Protocol(),
    max_new_tokens: int | None = None,
    font=None,
    mesh: str | None = None,
    log=print,
) -> dict:
    """Run every benchmark found under DATA_ROOT (or `only` those); returns summary.json's content.
    `max_new_tokens` overrides every benchmark's own (quick checks only: not the protocols')."""
    if storage.is_remote(out) and Share.current().count > 1:
        raise InputError(
            f"--out {out}: under several processes the suite writes a folder they share; give a shared "
            "local path (each process would otherwise answer into its own mirror)"
        )
    data_root = storage.fetched(data_root)  # an hf:// root: its copy in the Hugging Face cache
    if storage.is_remote(data_root):
        raise InputError(
            f"--data-root {data_root}: the suite reads a local directory (its scorers read files "
            "in place); copy the data root to this host"
        )
    if storage.as_path(out).exists() and not storage.as_path(out).is_dir():
        raise InputError(f"--out {out}: a file, not a directory")
    checkpoint = resolve_checkpoint(checkpoint)
    if not storage.is_remote(out):
        return _run_suite(
            checkpoint, Path(data_root), Path(out), only, limit, protocol, max_new_tokens, font, log, lambda: None, mesh
        )
    mirror = storage.Mirror(str(out), "suite")
    mirror.pull()
    try:
        return _run_suite(
            checkpoint,
            Path(data_root),
            mirror.local,
            only,
            limit,
            protocol,
            max_new_tokens,
            font,
            log,
            mirror.sync,
            mesh,
        )
    finally:
        mirror.sync()


def _run_suite(
    checkpoint: CheckpointRef,
    root: Path,
    out: Path,
    only,
    limit,
    protocol: Protocol,
    max_new_tokens,
    font,
    log,
    finished,
    mesh: str | None = None,
) -> dict:
    if not root.is_dir():
        raise MissingFileError(f"--data-root {root}: no such directory")
    config, tokenizer = checkpoint.config, checkpoint.tokenizer
    images = family_of(config).takes_images
    todo, skipped = plan(root, only, text_only=not images)
    for name, why in skipped.items():
        log(f"skipping {name}: {why}")
    if not todo:
        raise MissingFileError(
            f"{root}: none of the suite's files are there (see the README's layout)"
            if images or not only
            else f"--only {','.join(only)}: nothing a text-only LLM can run ({checkpoint})"
        )
    protocol = protocol.resolved(config, tokenizer)
    generator = load_generator(checkpoint, batch_size=protocol.batch_size, dtype=jnp.dtype(protocol.dtype), mesh=mesh)
    for name in todo:
        log(f"== {name}")
        if name in SAFETY:
            s = SAFETY[name]
            files = (
                dict(meta=root / s.files[0], images=root / s.files[1])
                if s.benchmark == "vlguard"
                else dict(data=root / s.files[0], **({"images": root / s.files[1]} if len(s.files) > 1 else {}))
            )
            safety = dataclasses.replace(protocol, max_new_tokens=max_new_tokens or protocol.max_new_tokens)
            spec = Evaluation(
                checkpoint,
                s.benchmark,
                out,
                font=font,
                limit=limit,
                protocol=safety,
                **files,
                **dict(s.kw),
                **(_win_rate(root, log) if name == "vlguard/safe_safes" else {}),
                mesh=mesh,
            )
            run(spec, generator=generator, log=log)
        else:
            _helpfulness(name, checkpoint, root, out, generator, protocol, limit, max_new_tokens, log)
        finished()
    if Share.current().lead:
        return update_summary(out, "skipped", skipped)
    return read_json(out / SUMMARY, {})


def _win_rate(root: Path, log) -> dict:
    """The paper's safe-safes helpfulness: the GPT-4V judge's win rate against the reference
    answers, asked as `evaluate --judge openai-compatible` asks, when the judge is configured and
    the references are in the data root; else the token F1 alone, and the log says why."""
    references = root / WIN_RATE_REFERENCES
    try:
        judge_settings()
    except JudgeNotConfigured:
        log("vlguard/safe_safes: the judge is not configured (VLGUARD_JUDGE_URL, VLGUARD_JUDGE_MODEL): token F1 only")
        return {}
    if not references.is_file():
        log(f"vlguard/safe_safes: no {references} (the reference answers): token F1 only, no win rate")
        return {}
    return {"judge": "openai-compatible", "references": references}


def _helpfulness(
    name, checkpoint: CheckpointRef, root: Path, out: Path, generator, protocol: Protocol, limit, max_new_tokens, log
) -> None:
    h = HELPFULNESS[name]
    questions = vqa.read_questions(root / h.questions, single_pred=h.single_pred)[:limit]
    path = out / "answers" / f"{name}.jsonl"
    max_new = max_new_tokens or h.max_new_tokens or vqa.MAX_NEW_TOKENS[Path(h.questions).suffix]
    conv_mode = vqa.conv_template("auto", checkpoint)
    settings = {
        "conv_mode": conv_mode,
        "max_new_tokens": max_new,
        "single_pred_prompt": h.single_pred,
        "dtype": protocol.dtype,
        "pad": True,
    }
    claim_output(
        out,
        path,
        {"checkpoint": str(checkpoint), "fingerprint": checkpoint.fingerprint, "protocol": settings, "seed": 0},
        log,
    )
    gen, loaded = generator
    answers = vqa.answer(
        gen,
        loaded,
        questions,
        path,
        image_folder=root / h.images if h.images else None,
        conv_mode=conv_mode,
        max_new_tokens=max_new,
        model_id=Path(checkpoint.name).name,
        log=log,
    )
    if not Share.current().lead:  # the lead scores the merged answers
        return
    (out / "upload").mkdir(parents=True, exist_ok=True)
    (out / "grades").mkdir(parents=True, exist_ok=True)
    metrics = score(name, answers, path, root, out / "upload", out / "grades", allow_partial=limit is not None)
    update_summary(
        out,
        f"helpfulness/{name}",
        dict(
            metrics,
            answered=len(answers),
            checkpoint=str(checkpoint),
            headline=headline(name, metrics),
            model="vllm",
            protocol=settings,
            mesh=sharding.mesh_record(gen.mesh),
        ),
    )


def headline(name: str, metrics: dict) -> float | None:
    value = metrics
    for k in HEADLINE.get(name, ()):
        value = value.get(k) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) else None
