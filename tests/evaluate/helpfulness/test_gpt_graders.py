"""MM-Vet and LLaVA-Bench graded by their official protocols, against a chat-completions stub on
127.0.0.1: the requests they send, how replies are parsed (the originals' quirks included), the
aggregation, and resuming without asking again."""

import json

import pytest

from tests.evaluate.helpfulness.test_vqa_scoring import ans, jsonl
from tests.judge_stub import reply, serve
from vlguard_jax.evaluate.helpfulness import gpt_graders


def test_llava_bench_scores_relative_to_the_reference(tmp_path, monkeypatch):
    questions = [
        {"question_id": i, "image": f"{i}.jpg", "text": f"Q{i}?", "category": c}
        for i, c in enumerate(["conv", "detail", "complex"])
    ]
    jsonl(tmp_path / "q.jsonl", questions)
    jsonl(
        tmp_path / "ctx.jsonl",
        [{"image": f"{i}.jpg", "caption": ["a cat", "on a mat"] if i == 0 else "a dog"} for i in range(3)],
    )
    jsonl(tmp_path / "gpt4.jsonl", [ans(i, f"reference {i}") for i in range(3)])
    replies = {"Q0?": "8 6\nclose", "Q1?": "10,5\nshort", "Q2?": "eight six\nunparsed"}

    def answer(body):
        user = body["messages"][1]["content"]
        return reply(replies[user.split("[Question]\n")[1].split("\n")[0]])

    with serve(answer, monkeypatch, model="gpt-4-0314") as requests:
        r = gpt_graders.llava_bench(
            [ans(i, f"ours {i}") for i in range(3)],
            tmp_path / "q.jsonl",
            tmp_path / "ctx.jsonl",
            tmp_path / "gpt4.jsonl",
            tmp_path / "grades.json",
        )
        body = requests[0]["body"]
        assert (body["temperature"], body["max_tokens"]) == (0.2, 1024)
        assert body["messages"][0] == {"role": "system", "content": gpt_graders.REVIEW_SYSTEM}
        user = body["messages"][1]["content"]
        assert user.startswith(
            "[Context]\na cat\non a mat\n\n[Question]\nQ0?\n\n[Assistant 1]\nreference 0\n\n"
            "[End of Assistant 1]\n\n[Assistant 2]\nours 0\n\n[End of Assistant 2]\n\n[System]\n"
        )
        again = gpt_graders.llava_bench(
            [ans(i, f"ours {i}") for i in range(3)],
            tmp_path / "q.jsonl",
            tmp_path / "ctx.jsonl",
            tmp_path / "gpt4.jsonl",
            tmp_path / "grades.json",
        )
        assert len(requests) == 3 and again == r
    # the unparsed review scores -1 -1 and still counts, as in summarize_gpt_review.py
    assert r["llava_bench_conv"]["relative"] == pytest.approx(75.0)
    assert r["llava_bench_detail"]["relative"] == pytest.approx(50.0)
    assert r["all"]["relative"] == pytest.approx(100 * (6 + 5 - 1) / (8 + 10 - 1))
    assert r["all"]["reference"] == pytest.approx(10 * 17 / 3) and r["all"]["n"] == 3


def test_mm_vet_grades_and_retries_as_its_evaluator(tmp_path, monkeypatch):
    data = {
        "v1_0": {"question": "What is x?", "answer": "-1<AND>-5", "capability": ["math", "ocr"]},
        "v1_1": {"question": "Which animal?", "answer": "cat<OR>kitten", "capability": ["rec"]},
        "v1_2": {"question": "Explain.", "answer": "a joke", "capability": ["rec", "gen"]},
    }
    (tmp_path / "mm-vet.json").write_text(json.dumps(data))
    asked = []

    def answer(body):
        row = body["messages"][0]["content"][len(gpt_graders.MMVET_PROMPT) :]  # the row to complete
        if row.startswith("\nWhat is x?"):
            return reply("0.5")
        if row.startswith("\nWhich animal?"):
            asked.append(row)
            return reply("abc" if len(asked) == 1 else "1.0 ")  # unparsable once, then a number
        return reply("x")  # never a number: 0.0 after the retries

    answers = [ans(0, "x = -1"), ans(1, "a kitten"), ans(2, "no idea")]
    with serve(answer, monkeypatch, model="gpt-4-0613") as requests:
        r = gpt_graders.mm_vet(answers, tmp_path / "mm-vet.json", tmp_path / "grades.json")
    first = requests[0]["body"]
    assert (first["max_tokens"], first["temperature"]) == (3, 0.0)
    assert first["messages"][0]["content"] == gpt_graders.MMVET_PROMPT + "\nWhat is x? | -1 <AND> -5 | x = -1 | "
    third = [q["body"] for q in requests if "Explain." in q["body"]["messages"][0]["content"]]
    # one ask, then five more with the retry line, at temperature 0, 0, 0.5, 1.0, 1.5, 2.0
    assert [b["temperature"] for b in third] == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]
    assert all(b["messages"][0]["content"].endswith(gpt_graders.MMVET_RETRY) for b in third[1:])
    assert json.loads((tmp_path / "grades.json").read_text()) == {"v1_0": 0.5, "v1_1": 1.0, "v1_2": 0.0}
    assert r["total"] == pytest.approx(50.0)
    assert r["by_capability"] == pytest.approx({"gen": 0.0, "math": 50.0, "ocr": 50.0, "rec": 50.0})
    with pytest.raises(ValueError, match="1 questions of .*mm-vet.json have no answer, e.g. 'v1_2'"):
        gpt_graders.mm_vet(answers[:2], tmp_path / "mm-vet.json", tmp_path / "g2.json")
