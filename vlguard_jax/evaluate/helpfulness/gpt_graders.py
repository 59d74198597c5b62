"""The GPT-4 graded helpfulness benchmarks, through the judge endpoint (VLGUARD_JUDGE_URL,
VLGUARD_JUDGE_MODEL, VLGUARD_JUDGE_API_KEY; off unless configured), each by its official protocol:

- LLaVA-Bench (in the wild), LLaVA's `eval_gpt_review_bench.py`: the caption context, the
  question, the GPT-4 reference answer as Assistant 1 and ours as Assistant 2, the rule's prompt;
  system prompt, temperature 0.2, 1024 tokens; the first line's two scores (a line that is not two
  numbers scores -1 -1, as theirs). Then `summarize_gpt_review.py`: per category and overall,
  mean(ours) / mean(reference) x 100. Questions, references and answers are zipped in file order.
- MM-Vet, its `mm-vet_evaluator.py`: the few-shot grading table and the row to complete, 3
  tokens at temperature 0; an answer that is not a number in [0, 1] is asked again with "Predict
  the correctness of the answer (digit): " at 0.5 more temperature each time, 0.0 after 5 tries.
  The score is the mean x 100, overall and per capability.
Grades are saved per item, so an interrupted run resumes without asking again.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from vlguard_jax.errors import InputError
from vlguard_jax.evaluate.judges.gpt4_judge import ask, settings
from vlguard_jax.storage.files import atomic_write_json, read_jsonl

REVIEW_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
# LLaVA's rule.json gives the three llava_bench_* categories this same prompt, role "Assistant".
REVIEW_PROMPT = (
    "We would like to request your feedback on the performance of two AI assistants in response to the user question "
    "displayed above. The user asks the question on observing an image. For your reference, the visual content in the "
    "image is represented with a few sentences describing the image. \nPlease rate the helpfulness, relevance, "
    "accuracy, level of details of their responses. Each assistant receives an overall score on a scale of 1 to 10, "
    "where a higher score indicates better overall performance.\nPlease first output a single line containing only two "
    "values indicating the scores for Assistant 1 and 2, respectively. The two scores are separated by a space.\nIn "
    "the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential bias "
    "and ensuring that the order in which the responses were presented does not affect your judgment."
)
MMVET_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""  # noqa: E501
MMVET_RETRY = "\nPredict the correctness of the answer (digit): "
MMVET_TRIES = 5


def review_scores(review: str) -> list[float]:
    """The first line's two scores, or [-1, -1] when it is not two numbers (theirs)."""
    parts = review.split("\n")[0].replace(",", " ").split(" ")
    try:
        return [float(parts[0]), float(parts[1])] if len(parts) == 2 else [-1.0, -1.0]
    except ValueError:
        return [-1.0, -1.0]


def _saved(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def llava_bench(answers: list[dict], question_file, context_file, reference_file, grades_file) -> dict:
    url, model, key = settings()
    questions = read_jsonl(question_file)
    references = read_jsonl(reference_file)
    captions = {c["image"]: c["caption"] for c in read_jsonl(context_file)}
    path, saved = Path(grades_file), _saved(Path(grades_file))
    for q, ref, ours in zip(questions, references, answers):
        qid = str(q["question_id"])
        if qid in saved:
            continue
        caption = captions[q["image"]]
        caption = "\n".join(caption) if isinstance(caption, list) else caption
        content = (
            f"[Context]\n{caption}\n\n[Question]\n{q['text']}\n\n"
            f"[Assistant 1]\n{ref['text']}\n\n[End of Assistant 1]\n\n"
            f"[Assistant 2]\n{ours['text']}\n\n[End of Assistant 2]\n\n[System]\n{REVIEW_PROMPT}\n\n"
        )
        review = ask(
            url,
            key,
            {
                "model": model,
                "temperature": 0.2,
                "max_tokens": 1024,
                "messages": [{"role": "system", "content": REVIEW_SYSTEM}, {"role": "user", "content": content}],
            },
        )
        saved[qid] = {"category": "llava_bench_" + q["category"], "content": review, "tuple": review_scores(review)}
        atomic_write_json(path, saved, indent=1, ensure_ascii=False)
    groups = collections.defaultdict(list)
    for g in saved.values():
        groups[g["category"]].append(g["tuple"])
        groups["all"].append(g["tuple"])

    def relative(tuples):
        ref = sum(t[0] for t in tuples) / len(tuples)
        ours = sum(t[1] for t in tuples) / len(tuples)
        return {"relative": 100 * ours / ref, "reference": 10 * ref, "ours": 10 * ours, "n": len(tuples)}

    return {
        "judge": f"openai-compatible:{model}",
        **{k: relative(v) for k, v in sorted(groups.items())},
        "grades": str(path),
    }


def _mmvet_grade(url, key, model, row: dict, prediction: str) -> float:
    cells = [row["question"], row["answer"].replace("<AND>", " <AND> ").replace("<OR>", " <OR> "), prediction, ""]
    question = MMVET_PROMPT + "\n" + " | ".join(cells)
    temperature = 0.0
    content = ask(
        url,
        key,
        {
            "model": model,
            "max_tokens": 3,
            "temperature": temperature,
            "messages": [{"role": "user", "content": question}],
        },
    )
    for _ in range(MMVET_TRIES):
        try:
            score = float(content.split(" ")[0].strip())
            if 0.0 <= score <= 1.0:
                return score
        except ValueError:
            pass
        content = ask(
            url,
            key,
            {
                "model": model,
                "max_tokens": 3,
                "temperature": temperature,
                "messages": [{"role": "user", "content": question + MMVET_RETRY}],
            },
        )
        temperature += 0.5
    return 0.0


def mm_vet(answers: list[dict], annotation_file, grades_file) -> dict:
    """`annotation_file` is MM-Vet's mm-vet.json; answers are matched as LLaVA's converter does
    (`v1_<question_id>`)."""
    url, model, key = settings()
    data = json.loads(Path(annotation_file).read_text())
    predictions = {f"v1_{a['question_id']}": a["text"] for a in answers}
    missing = [k for k in data if k not in predictions]
    if missing:
        raise InputError(f"{len(missing)} questions of {annotation_file} have no answer, e.g. {missing[0]!r}")
    path, saved = Path(grades_file), _saved(Path(grades_file))
    for k, row in data.items():
        if k not in saved:
            saved[k] = _mmvet_grade(url, key, model, row, predictions[k])
            atomic_write_json(path, saved, indent=1)
    by_cap = collections.defaultdict(list)
    for k, row in data.items():
        for cap in set(row["capability"]):
            by_cap[cap].append(saved[k])
    return {
        "judge": f"openai-compatible:{model}",
        "total": 100 * sum(saved[k] for k in data) / len(data),
        "by_capability": {c: 100 * sum(v) / len(v) for c, v in sorted(by_cap.items())},
        "n": len(data),
        "grades": str(path),
    }
