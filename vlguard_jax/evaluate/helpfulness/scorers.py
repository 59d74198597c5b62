"""One entry to LLaVA-1.5's helpfulness scorers: which files each benchmark's scorer reads, and
`score(benchmark, inputs)`, the number that scorer gives for an answers file. The command line
(`evaluate score --benchmark`) only parses into `ScoreInputs` and prints the result."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from vlguard_jax.errors import MissingFileError
from vlguard_jax.evaluate.helpfulness import gpt_graders, vqa_scoring


@dataclasses.dataclass(frozen=True)
class ScoreInputs:
    """An answers file and the benchmark files its scorer reads (named as LLaVA's scorers' flags)."""

    answers: str  # answers .jsonl in LLaVA's format
    allow_partial: bool = False  # score only the answered questions (an interrupted run)
    base_dir: str | None = None  # sqa: the ScienceQA folder; mme: MME_Benchmark_release_version
    split: str = "test"  # sqa: the split of pid_splits.json
    question_file: str | None = None  # pope, vizwiz, llavabench: the question .jsonl; mmbench: the .tsv
    annotation_dir: str | None = None  # pope: the coco_pope_<category>.json folder
    annotation_file: str | None = None  # textvqa: TextVQA_0.5.1_val.json; mmvet: mm-vet.json
    questions: str | None = None  # gqa: testdev_balanced_questions.json
    context: str | None = None  # llavabench: context.jsonl
    reference: str | None = None  # llavabench: answers_gpt4.jsonl
    upload_file: str | None = None  # vizwiz, mmbench test: the test server's upload file to write
    grades_file: str | None = None  # mmvet, llavabench: the judge's grades (default: beside the answers)


# benchmark -> the inputs its scorer cannot do without
NEEDS = {
    "sqa": ("base_dir",),
    "pope": ("question_file", "annotation_dir"),
    "mme": ("base_dir",),
    "textvqa": ("annotation_file",),
    "gqa": ("questions",),
    "mmbench": ("question_file",),
    "vizwiz": ("question_file", "upload_file"),
    "mmvet": ("annotation_file",),
    "llavabench": ("question_file", "context", "reference"),
}
SCORED = tuple(NEEDS)


def missing(benchmark: str, inputs: ScoreInputs) -> str | None:
    """The first input `benchmark`'s scorer needs that `inputs` lacks (its field name), or None."""
    return next((n for n in NEEDS[benchmark] if getattr(inputs, n) is None), None)


FOLDERS = ("base_dir", "annotation_dir")  # the inputs that are folders; the others are files
WRITTEN = ("upload_file", "grades_file")  # outputs, not read


def absent(benchmark: str, inputs: ScoreInputs) -> None:
    """A file or folder the scorer would read that is not there: one line naming its flag."""
    for name in NEEDS[benchmark]:
        path = getattr(inputs, name)
        if name in WRITTEN or path is None:
            continue
        there = Path(path).is_dir() if name in FOLDERS else Path(path).is_file()
        if not there:
            flag = "--" + name.replace("_", "-")
            raise MissingFileError(f"{flag} {path}: no such {'folder' if name in FOLDERS else 'file'}")


def score(benchmark: str, inputs: ScoreInputs, answers: list[dict] | None = None) -> dict:
    """LLaVA's scorer for `benchmark` on `inputs.answers` (or on `answers`, its lines already read:
    the suite's); for vizwiz and mmbench with an upload file, {"upload": the file written for the
    test server}."""
    lacking = missing(benchmark, inputs)
    if lacking is not None:
        raise ValueError(f"score({benchmark!r}) needs {lacking}")  # the CLI asks for it first
    i = inputs
    absent(benchmark, inputs)
    answers = vqa_scoring.read_answers(i.answers) if answers is None else answers
    grades = i.grades_file or str(Path(i.answers).with_suffix(".grades.json"))
    partial: dict[str, Any] = {"allow_partial": i.allow_partial, "source": i.answers}
    if benchmark == "sqa":
        return vqa_scoring.sqa(answers, i.base_dir, i.split, **partial)
    if benchmark == "pope":
        return vqa_scoring.pope(answers, i.question_file, i.annotation_dir, **partial)
    if benchmark == "mme":
        return vqa_scoring.mme(answers, i.base_dir, **partial)
    if benchmark == "textvqa":
        return vqa_scoring.textvqa(answers, i.annotation_file, **partial)
    if benchmark == "gqa":
        return vqa_scoring.gqa(answers, i.questions, **partial)
    if benchmark == "mmbench" and i.upload_file:
        return {"upload": str(vqa_scoring.mmbench_upload(answers, i.question_file, i.upload_file))}
    if benchmark == "mmbench":
        return vqa_scoring.mmbench(answers, i.question_file, **partial)
    if benchmark == "vizwiz":
        return {"upload": str(vqa_scoring.vizwiz_upload(answers, i.question_file, i.upload_file, i.answers))}
    if benchmark == "mmvet":
        return gpt_graders.mm_vet(answers, i.annotation_file, grades)
    if benchmark == "llavabench":
        return gpt_graders.llava_bench(answers, i.question_file, i.context, i.reference, grades)
    raise ValueError(f"no scorer for {benchmark!r}; those are {SCORED}")
