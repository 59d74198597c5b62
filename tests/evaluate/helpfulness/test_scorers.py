"""One entry to every helpfulness scorer: each benchmark's needed files are named before anything
is read, and `score` gives what that LLaVA scorer gives for an answers file."""

import json

import pytest

from vlguard_jax.evaluate.helpfulness import scorers
from vlguard_jax.evaluate.helpfulness import vqa_scoring as vs


def test_what_each_scorer_needs_is_named():
    assert scorers.missing("pope", scorers.ScoreInputs("a.jsonl", question_file="q.jsonl")) == "annotation_dir"
    assert scorers.missing("llavabench", scorers.ScoreInputs("a.jsonl")) == "question_file"
    assert scorers.missing("gqa", scorers.ScoreInputs("a.jsonl", questions="q.json")) is None
    assert set(scorers.SCORED) == {"sqa", "pope", "mme", "textvqa", "gqa", "mmbench", "vizwiz", "mmvet", "llavabench"}
    with pytest.raises(ValueError, match="needs base_dir"):
        scorers.score("mme", scorers.ScoreInputs("a.jsonl"))


def test_score_is_the_benchmarks_scorer_on_the_answers_file(tmp_path):
    questions = {"q1": {"answer": "yes", "isBalanced": True}, "q2": {"answer": "left", "isBalanced": True}}
    (tmp_path / "questions.json").write_text(json.dumps(questions))
    lines = [
        {"question_id": "q1", "prompt": "Is it?", "text": "Yes", "answer_id": "a", "model_id": "m", "metadata": {}},
        {"question_id": "q2", "prompt": "Where?", "text": "right", "answer_id": "b", "model_id": "m", "metadata": {}},
    ]
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    got = scorers.score(
        "gqa", scorers.ScoreInputs(str(tmp_path / "answers.jsonl"), questions=str(tmp_path / "questions.json"))
    )
    assert got == vs.gqa(vs.read_answers(tmp_path / "answers.jsonl"), tmp_path / "questions.json")
    assert got["accuracy"] == pytest.approx(50.0)


@pytest.mark.parametrize(
    "which, flags, named",
    [
        (
            "pope",
            ["--question-file", "Q", "--annotation-dir", "nowhere"],
            "--annotation-dir {}/nowhere: no such folder",
        ),
        ("mme", ["--base-dir", "nowhere"], "--base-dir {}/nowhere: no such folder"),
        ("mmbench", ["--question-file", "nowhere.tsv"], "--question-file {}/nowhere.tsv: no such file"),
    ],
)
def test_a_missing_benchmark_file_or_folder_is_one_line(tmp_path, capsys, which, flags, named):
    from vlguard_jax.evaluate.__main__ import main

    (tmp_path / "answers.jsonl").write_text("")
    (tmp_path / "Q").write_text("")
    flags = [str(tmp_path / f) if not f.startswith("--") else f for f in flags]
    assert main(["score", "--benchmark", which, "--answers", str(tmp_path / "answers.jsonl"), *flags]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: " + named.format(tmp_path) and "Traceback" not in err
