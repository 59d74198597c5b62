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
  rows and rounds is right. Letters are read as stated in `option_letter`.
- vizwiz, mmbench test: no public answers; the upload files LLaVA's converters write.
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
from vlguard_jax.evaluate.answer_norm import normalize, soft_accuracy
from vlguard_jax.io.files import atomic_write_json, read_jsonl

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


def read_answers(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such answers file")
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
        raise FileNotFoundError(f"{path}: no such file") from None
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


def sqa(answers: list[dict], base_dir, split: str = "test") -> dict:
    base = Path(base_dir)
    split_ids = _json(base / "pid_splits.json")[split]
    problems = _json(base / "problems.json")
    by_id = {a["question_id"]: a for a in answers}
    correct = img_correct = img_total = 0
    for pid in split_ids:
        answer = by_id.get(pid, {"text": "FAILED", "prompt": "Unknown"})
        choices = problems[pid]["choices"]
        letter = sqa_letter(answer["text"])
        right = letter in SQA_OPTIONS[: len(choices)] and SQA_OPTIONS.index(letter) == problems[pid]["answer"]
        correct += right
        if "<image>" in answer["prompt"]:
            img_total += 1
            img_correct += right
    return {
        "accuracy": 100 * correct / len(split_ids),
        "img_accuracy": 100 * img_correct / img_total if img_total else None,
        "correct": correct,
        "count": len(split_ids),
        "img_correct": img_correct,
        "img_count": img_total,
    }


# ---- POPE --------------------------------------------------------------------------------------
def pope_says_no(text: str) -> bool:
    first = text.split(".")[0] if "." in text else text
    words = first.replace(",", "").split(" ")
    return "No" in words or "not" in words or "no" in words


def pope(answers: list[dict], question_file, annotation_dir) -> dict:
    questions = {q["question_id"]: q for q in read_jsonl(question_file)}
    out = {}
    for f in sorted(Path(annotation_dir).iterdir()):
        if not (f.name.startswith("coco_pope_") and f.name.endswith(".json")):
            raise RecordError(f"{f}: not a POPE annotation file (coco_pope_<category>.json)")
        category = f.name[len("coco_pope_") : -len(".json")]
        labels = [json.loads(line)["label"] != "no" for line in f.read_text().splitlines() if line.strip()]
        try:
            preds = [
                not pope_says_no(a["text"]) for a in answers if questions[a["question_id"]]["category"] == category
            ]
        except KeyError as e:
            raise RecordError(f"{question_file}: no question {e.args[0]!r}, which the answers name") from None
        pairs = list(zip(preds, labels))  # LLaVA zips in file order
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
    return out


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


def mme(answers: list[dict], base_dir) -> dict:
    gt = mme_ground_truth(base_dir)
    rows = collections.defaultdict(list)
    for a in answers:
        category = str(a["question_id"]).split("/")[0]
        file = str(a["question_id"]).split("/")[-1].split(".")[0] + ".txt"
        prompt = a["prompt"]
        if MME_WORD_PHRASE in prompt:
            prompt = prompt.replace(MME_WORD_PHRASE, "").strip()
        if MME_YES_NO not in prompt:
            prompt = prompt + " " + MME_YES_NO
            if (category, file, prompt) not in gt:
                prompt = prompt.replace(" " + MME_YES_NO, "  " + MME_YES_NO)
        if (category, file, prompt) not in gt:
            raise RecordError(f"{base_dir}: no ground truth for {a['question_id']!r}: {prompt!r}")
        rows[category].append((gt[category, file, prompt].lower(), mme_label(a["text"])))
    scores = {}
    for category, pairs in rows.items():
        chunks = [pairs[i : i + 2] for i in range(0, len(pairs), 2)]
        acc = sum(g == p for g, p in pairs) / len(pairs)
        acc_plus = sum(all(g == p for g, p in c) for c in chunks) / len(chunks)
        scores[category] = 100 * acc + 100 * acc_plus
    out: dict[str, Any] = {"subtasks": dict(sorted(scores.items()))}
    for group, tasks in MME_TASKS.items():
        out[group] = sum(scores[t] for t in tasks if t in scores)
        missing = [t for t in tasks if t not in scores]
        if missing:
            out[f"{group}_missing"] = missing
    return out


# ---- TextVQA and GQA -----------------------------------------------------------------------------
def textvqa_question(prompt: str) -> str:
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        m = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        if m is None:
            raise ValueError(f"a TextVQA prompt with OCR tokens but no 'Question: ... Short answer:': {prompt[:80]!r}")
        question = m.group(1)
    elif "Reference OCR token: " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise RecordError(f"cannot find the question in the prompt {prompt!r} (LLaVA's TextVQA prompt forms)")
    return question.lower()


def textvqa(answers: list[dict], annotation_file) -> dict:
    data = _json(annotation_file)["data"]
    by_key = {(d["image_id"], d["question"].lower()): d for d in data}
    scores = []
    for a in answers:
        key = (a["question_id"], textvqa_question(a["prompt"]))
        if key not in by_key:
            raise RecordError(f"{annotation_file}: no annotation for image {key[0]!r}, question {key[1]!r}")
        scores.append(soft_accuracy(a["text"], by_key[key]["answers"]))
    return {"accuracy": 100 * sum(scores) / len(scores), "n": len(scores)}


def gqa(answers: list[dict], questions_file) -> dict:
    questions = _json(questions_file)
    predictions = {str(a["question_id"]): a["text"].rstrip(".").lower() for a in answers}
    scored = [(qid, q) for qid, q in questions.items() if q.get("isBalanced", True)]
    missing = [qid for qid, _ in scored if qid not in predictions]
    if missing:
        raise RecordError(f"{len(missing)} questions of {questions_file} have no answer, e.g. {missing[0]!r}")
    correct = sum(predictions[qid] == q["answer"] for qid, q in scored)
    return {"accuracy": 100 * correct / len(scored), "n": len(scored)}


# ---- MMBench -----------------------------------------------------------------------------------
def mmbench_rows(path) -> list[dict]:
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def option_letter(text: str, options: dict) -> str | None:
    """The option an answer names: the bare letter; a letter opening it ('B.', '(B)', 'B ...');
    else the one option whose text it is (case and a final '.' aside). None when it names none."""
    text = text.strip()
    if text in options:
        return text
    m = re.match(r"^\(?([A-Z])(?:[).:]|\s|$)", text)
    if m and m.group(1) in options:
        return m.group(1)
    same = [k for k, v in options.items() if v.strip().rstrip(".").lower() == text.rstrip(".").lower()]
    return same[0] if len(same) == 1 else None


def mmbench(answers: list[dict], question_file) -> dict:
    rows = {int(r["index"]): r for r in mmbench_rows(question_file)}
    groups = collections.defaultdict(list)
    for a in answers:
        row = rows.get(int(a["question_id"]))
        if row is None:
            raise RecordError(f"{question_file}: no row with index {a['question_id']!r}, which the answers name")
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


def vizwiz_upload(answers: list[dict], question_file, dst) -> Path:
    """LLaVA's `convert_vizwiz_for_submission.py`: [{image, answer (EvalAI-normalised)}] per question."""
    by_id = {a["question_id"]: a["text"] for a in answers}
    questions = read_jsonl(question_file)
    missing = [q["question_id"] for q in questions if q["question_id"] not in by_id]
    if missing:
        raise RecordError(f"{len(missing)} questions of {question_file} have no answer, e.g. {missing[0]!r}")
    atomic_write_json(dst, [{"image": q["image"], "answer": normalize(by_id[q["question_id"]])} for q in questions])
    return Path(dst)
