"""LLaVA-1.5's helpfulness scorers, rule for rule, on answers files in LLaVA's format: each gives the
number the matching LLaVA scorer (or the benchmark's official one) gives on the same answers.

- sqa: `eval_science_qa.py`, accuracy and IMG-accuracy (questions whose prompt holds `<image>`).
- pope: `eval_pope.py`, per category: the first sentence, commas dropped, 'No'/'not'/'no' as a word
  means no; labels zipped with the category's answers in file order, as LLaVA does.
- mme: LLaVA's `convert_answer_to_mme.py` then MME's `calculation.py`: acc and acc+ (both questions
  of an image right, taken as consecutive pairs) per subtask, each x100 and summed.
- textvqa: `eval_textvqa.py`, the EvalAI soft accuracy (answer_norm.py).
- gqa: `convert_gqa_for_eval.py` (trailing '.' stripped, lower-cased) then GQA's exact match.
- mmbench (dev): circular accuracy: a question (index mod 1e6) counts only if every one of its
  rows and rounds is right. Letters are read by the server's rule-based extraction
  (`option_letter`) without its ChatGPT fallback, so the local figure is approximate: an answer
  the rules cannot place counts wrong here. The upload file is the faithful route.
- vizwiz, mmbench test: no public answers; the upload files LLaVA's converters write.

Every scorer pairs each answer with its own question through `question_id` (and the question
file), never by position in the answers file: the same answers in any order give the same numbers.
An empty answers file, an answer twice, or an answer to a question the benchmark does not hold is
an error naming it; a question with no answer too, unless `allow_partial`: then only the answered
questions are scored, and `coverage` says how many of how many.
"""

from __future__ import annotations

import collections
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

from openpyxl import Workbook

from vlguard_jax.data.records import RecordError
from vlguard_jax.errors import InputError, MissingFileError
from vlguard_jax.evaluate.helpfulness.answer_norm import normalize, soft_accuracy
from vlguard_jax.storage.files import atomic_write_json, read_jsonl

SQA_OPTIONS = ("A", "B", "C", "D", "E")
MME_TASKS = {
    "perception": (
        "existence",
        "count",
        "position",
        "color",
        "posters",
        "celebrity",
        "scene",
        "landmark",
        "artwork",
        "OCR",
    ),
    "cognition": ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"),
}
MME_WORD_PHRASE = "Answer the question using a single word or phrase."
MME_YES_NO = "Please answer yes or no."


def pair(
    answers: list[dict],
    expected: list,
    source,
    allow_partial: bool = False,
    key=lambda a: a["question_id"],
    known=None,
) -> tuple[dict, dict]:
    """({question key: its answer}, coverage) for the `expected` keys (in their order). `key(answer)`
    is an answer's question key; `known` (default: `expected`) the keys of every question the
    benchmark holds."""
    if not answers:
        raise RecordError(f"{source}: no answers to score")
    known = set(expected) if known is None else known
    by: dict = {}
    for a in answers:
        k = key(a)
        if k not in known:
            raise RecordError(
                f"{source}: question_id {a['question_id']!r} is not a question of this benchmark's question file "
                "(answers of another benchmark?)"
            )
        if k in by:
            raise RecordError(f"{source}: question_id {a['question_id']!r} is answered more than once")
        by[k] = a
    missing = [k for k in expected if k not in by]
    if missing and not allow_partial:
        raise RecordError(
            f"{source}: {len(missing)} of {len(expected)} questions have no answer (e.g. {missing[0]!r}); "
            "pass --allow-partial to score only the answered ones"
        )
    coverage = {"answered": len(expected) - len(missing), "questions": len(expected)}
    return {k: by[k] for k in expected if k in by}, coverage


def read_answers(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such answers file")
    answers = read_jsonl(path)
    for n, a in enumerate(answers, 1):
        if not isinstance(a, dict) or "question_id" not in a or not isinstance(a.get("text"), str):
            raise RecordError(f"{path}: line {n}: expected an answer line with question_id and text")
    return answers


def _json(path):
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}") from None


# ---- ScienceQA ---------------------------------------------------------------------------------
def sqa_letter(text: str) -> str:
    if text in SQA_OPTIONS:
        return text
    if len(text) >= 3 and text[0] in SQA_OPTIONS and text[1:3] == ". ":
        return text[0]
    found = re.findall(r"The answer is ([A-Z]).", text)
    return found[0] if len(found) == 1 else "FAILED"


def sqa(answers: list[dict], base_dir, split: str = "test", allow_partial: bool = False, source="answers") -> dict:
    base = Path(base_dir)
    split_ids = _json(base / "pid_splits.json")[split]
    problems = _json(base / "problems.json")
    by_id, coverage = pair(answers, split_ids, source, allow_partial)
    correct = img_correct = img_total = 0
    for pid, answer in by_id.items():
        choices = problems[pid]["choices"]
        letter = sqa_letter(answer["text"])
        right = letter in SQA_OPTIONS[: len(choices)] and SQA_OPTIONS.index(letter) == problems[pid]["answer"]
        correct += right
        if "<image>" in answer["prompt"]:
            img_total += 1
            img_correct += right
    return {
        "accuracy": 100 * correct / len(by_id),
        "img_accuracy": 100 * img_correct / img_total if img_total else None,
        "correct": correct,
        "count": len(by_id),
        "img_correct": img_correct,
        "img_count": img_total,
        "coverage": coverage,
    }


# ---- POPE --------------------------------------------------------------------------------------
def pope_says_no(text: str) -> bool:
    first = text.split(".")[0] if "." in text else text
    words = first.replace(",", "").split(" ")
    return "No" in words or "not" in words or "no" in words


def pope(answers: list[dict], question_file, annotation_dir, allow_partial: bool = False, source="answers") -> dict:
    """Each question's label is the annotation line at its place among its category's questions
    (LLaVA's question file lists them in the annotation files' order; the images must agree)."""
    questions = read_jsonl(question_file)
    labels: dict = {}
    categories = []
    for f in sorted(Path(annotation_dir).iterdir()):
        if not (f.name.startswith("coco_pope_") and f.name.endswith(".json")):
            raise RecordError(f"{f}: not a POPE annotation file (coco_pope_<category>.json)")
        category = f.name[len("coco_pope_") : -len(".json")]
        categories.append(category)
        lines = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        mine = [q for q in questions if q.get("category") == category]
        if len(mine) != len(lines):
            raise RecordError(f"{f}: {len(lines)} labels for the {len(mine)} {category!r} questions of {question_file}")
        for n, (q, line) in enumerate(zip(mine, lines), 1):
            if "image" in line and line["image"] != q["image"]:
                raise RecordError(
                    f"{f}: label {n} is for image {line['image']!r}, but question "
                    f"{q['question_id']!r} of {question_file} shows {q['image']!r}"
                )
            labels[q["question_id"]] = (category, line["label"] != "no")
    by_id, coverage = pair(answers, list(labels), source, allow_partial)
    out: dict[str, Any] = {}
    for category in categories:
        pairs = [(not pope_says_no(a["text"]), labels[q][1]) for q, a in by_id.items() if labels[q][0] == category]
        preds = [p for p, _ in pairs]
        tp = sum(p and y for p, y in pairs)
        fp = sum(p and not y for p, y in pairs)
        tn = sum(not p and not y for p, y in pairs)
        fn = sum(not p and y for p, y in pairs)
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else None
        out[category] = {
            "n": len(preds),
            "accuracy": (tp + tn) / len(pairs) if pairs else None,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "yes_ratio": sum(preds) / len(preds) if preds else None,
        }
    return {"by_category": out, "coverage": coverage}


# ---- MME ---------------------------------------------------------------------------------------
def mme_ground_truth(base_dir) -> dict:
    """(category, answer file, question) -> 'Yes'/'No', from MME_Benchmark_release_version."""
    gt = {}
    for category in sorted(p for p in Path(base_dir).iterdir() if p.is_dir()):
        qa = category / "questions_answers_YN" if (category / "images").is_dir() else category
        for f in sorted(qa.glob("*.txt")):
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    question, answer = line.strip().split("\t")
                    gt[(category.name, f.name, question)] = answer
    return gt


def mme_label(text: str) -> str:
    text = text.lower()
    if text in ("yes", "no"):
        return text
    return "yes" if "yes" in text[:4] else "no" if "no" in text[:4] else "other"


def mme_key(a: dict, gt: dict) -> tuple | None:
    """The ground-truth key (category, answer file, question) an answer is for, or None."""
    category = str(a["question_id"]).split("/")[0]
    file = str(a["question_id"]).split("/")[-1].split(".")[0] + ".txt"
    prompt = a["prompt"]
    if MME_WORD_PHRASE in prompt:
        prompt = prompt.replace(MME_WORD_PHRASE, "").strip()
    if MME_YES_NO not in prompt:
        prompt = prompt + " " + MME_YES_NO
        if (category, file, prompt) not in gt:
            prompt = prompt.replace(" " + MME_YES_NO, "  " + MME_YES_NO)
    return (category, file, prompt) if (category, file, prompt) in gt else None


def mme(answers: list[dict], base_dir, allow_partial: bool = False, source="answers") -> dict:
    """acc+ pairs an image's two questions: answers are taken in the ground truth's order, so the
    pairs are the images' whatever the answers file's order."""
    gt = mme_ground_truth(base_dir)
    by_key, coverage = pair(answers, list(gt), source, allow_partial, key=lambda a: mme_key(a, gt))
    rows = collections.defaultdict(list)
    for k, a in by_key.items():
        rows[k[0]].append((k[1], gt[k].lower(), mme_label(a["text"])))
    scores = {}
    for category, found in rows.items():
        pairs = [(g, p) for _, g, p in found]
        images = collections.defaultdict(list)
        for image, g, p in found:
            images[image].append(g == p)
        acc = sum(g == p for g, p in pairs) / len(pairs)
        acc_plus = sum(all(c) for c in images.values()) / len(images)
        scores[category] = 100 * acc + 100 * acc_plus
    out: dict[str, Any] = {"subtasks": dict(sorted(scores.items()))}
    for group, tasks in MME_TASKS.items():
        out[group] = sum(scores[t] for t in tasks if t in scores)
        missing = [t for t in tasks if t not in scores]
        if missing:
            out[f"{group}_missing"] = missing
    out["coverage"] = coverage
    return out


# ---- TextVQA and GQA -----------------------------------------------------------------------------
def textvqa_question(prompt: str) -> str:
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        m = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        if m is None:
            raise InputError(f"a TextVQA prompt with OCR tokens but no 'Question: ... Short answer:': {prompt[:80]!r}")
        question = m.group(1)
    elif "Reference OCR token: " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise RecordError(f"cannot find the question in the prompt {prompt!r} (LLaVA's TextVQA prompt forms)")
    return question.lower()


def textvqa(answers: list[dict], annotation_file, allow_partial: bool = False, source="answers") -> dict:
    data = _json(annotation_file)["data"]
    by_key = {(d["image_id"], d["question"].lower()): d for d in data}

    answered, coverage = pair(
        answers, list(by_key), source, allow_partial, key=lambda a: (a["question_id"], textvqa_question(a["prompt"]))
    )
    scores = [soft_accuracy(a["text"], by_key[k]["answers"]) for k, a in answered.items()]
    return {"accuracy": 100 * sum(scores) / len(scores), "n": len(scores), "coverage": coverage}


def gqa(answers: list[dict], questions_file, allow_partial: bool = False, source="answers") -> dict:
    every = _json(questions_file)
    questions = {qid: q for qid, q in every.items() if q.get("isBalanced", True)}  # GQA scores these
    answered, coverage = pair(
        answers, list(questions), source, allow_partial, key=lambda a: str(a["question_id"]), known=set(every)
    )
    correct = sum(a["text"].rstrip(".").lower() == questions[qid]["answer"] for qid, a in answered.items())
    return {"accuracy": 100 * correct / len(answered), "n": len(answered), "coverage": coverage}


# ---- MMBench -----------------------------------------------------------------------------------
def mmbench_rows(path) -> list[dict]:
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


# OpenCompass's MMBench evaluation (VLMEvalKit's `can_infer`): refusals it maps to Z, no option.
MMBENCH_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)


def option_letter(text: str, options: dict) -> str | None:
    """The option an answer names, by the MMBench server's rule-based extraction (`can_infer`),
    without its ChatGPT fallback: after `.()[],:;!*#{}` become spaces, exactly one option letter
    among the words (unless an 'A' there may be the article: more than three words); else, but
    for a lone 'Z', the one option whose text the answer contains (case aside). None: a refusal,
    Z, or no single option."""
    if any(r in text for r in MMBENCH_REFUSALS):
        return None
    words = text
    for c in ".()[],:;!*#{}":
        words = words.replace(c, " ")
    splits = words.split()
    named = [k for k in options if k in splits]
    if len(named) == 1 and not ("A" in splits and len(splits) > 3):
        return named[0]
    if not named and "Z" in splits:  # the server's "none of these"
        return None
    low = text.lower()  # the article guard, no letter, or several: the option texts
    found = [k for k, v in options.items() if str(v).lower() in low]
    return found[0] if len(found) == 1 else None


def mmbench(answers: list[dict], question_file, allow_partial: bool = False, source="answers") -> dict:
    rows = {int(r["index"]): r for r in mmbench_rows(question_file)}
    rounds = {(int(a["question_id"]), a.get("round_id", 0)) for a in answers if int(a["question_id"]) in rows}
    expected = [(i, 0) for i in rows] + sorted(k for k in rounds if k[1] != 0)  # rotations asked are expected
    answered, coverage = pair(
        answers, expected, source, allow_partial, key=lambda a: (int(a["question_id"]), a.get("round_id", 0))
    )
    groups = collections.defaultdict(list)
    for (index, _), a in answered.items():
        row = rows[index]
        if not row.get("answer", "").strip():
            raise RecordError(
                f"{question_file}: row {row['index']} has no answer (a test split: write the upload "
                "file with --upload-file)"
            )
        letters = a.get("option_char") and ["A", "B", "C", "D"][: len(a["option_char"])]
        shown = dict(zip(letters, a["options"])) if letters else {k: row[k] for k in "ABCD" if row.get(k, "").strip()}
        picked = option_letter(a["text"], shown)
        groups[int(row["index"]) % 1_000_000].append(picked is not None and shown[picked] == row[row["answer"]])
    circular = sum(all(g) for g in groups.values()) / len(groups)
    first = [g[0] for g in groups.values()]
    return {
        "circular_accuracy": 100 * circular,
        "accuracy": 100 * sum(first) / len(first),
        "questions": len(groups),
        "answers": sum(map(len, groups.values())),
        "coverage": coverage,
        "approximate": "OpenCompass's rule-based option matching without its ChatGPT fallback; "
        "submit the upload file for the official figure",
    }


def mmbench_upload(answers: list[dict], question_file, dst) -> Path:
    """LLaVA's `convert_mmbench_for_submission.py`: the TSV's columns but hint, category, source,
    image, comment and l2-category, with `prediction` as the 7th column, as an .xlsx."""
    rows = mmbench_rows(question_file)
    dropped = {"hint", "category", "source", "image", "comment", "l2-category"}
    columns = [c for c in rows[0] if c not in dropped]
    columns.insert(6, "prediction")
    predictions = {str(a["question_id"]): a["text"] for a in answers}
    book = Workbook()
    sheet = book.active
    assert sheet is not None  # a new Workbook has its one sheet
    sheet.append(columns)
    for r in rows:
        values = dict(r, prediction=predictions.get(str(int(r["index"]))))
        sheet.append([_cell(values.get(c)) for c in columns])
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    book.save(tmp)
    tmp.replace(dst)
    return dst


def _cell(value):
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def vizwiz_upload(answers: list[dict], question_file, dst, source="answers") -> Path:
    """LLaVA's `convert_vizwiz_for_submission.py`: [{image, answer (EvalAI-normalised)}] per question
    (every question: the server scores the whole split)."""
    questions = {q["question_id"]: q for q in read_jsonl(question_file)}
    by_id, _ = pair(answers, list(questions), source)
    atomic_write_json(dst, [{"image": q["image"], "answer": normalize(by_id[i]["text"])} for i, q in questions.items()])
    return Path(dst)
