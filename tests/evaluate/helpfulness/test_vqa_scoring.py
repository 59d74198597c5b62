"""LLaVA-1.5's helpfulness scorers against values worked out by hand from each official rule, on
small files in each real format."""

import base64
import io
import json
import random

import pytest
from PIL import Image

from vlguard_jax.data.records import RecordError
from vlguard_jax.evaluate.__main__ import main
from vlguard_jax.evaluate.helpfulness import vqa_scoring as vs
from vlguard_jax.evaluate.helpfulness.answer_norm import normalize, soft_accuracy


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ans(qid, text, prompt="", **kw):
    return {"question_id": qid, "prompt": prompt, "text": text, "answer_id": "x", "model_id": "m", "metadata": {}, **kw}


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("The Coca-Cola company's.", "coca cola company 's"),  # article, hyphen (no space beside), "'s", final period
        ("3.14", "3.14"),  # a period before a digit stays
        ("ten", "10"),
        ("None", "0"),  # number words
        ("dont know", "don't know"),  # contractions get their apostrophe back
        ("Hello, world!", "hello world"),  # ',' dropped first; '!' not beside a space -> space
        ("a - b", "b"),  # '-' beside a space is deleted; 'a' is an article
        ("." * 40, "." * 8),  # the original deletes at most 32 periods
    ],
)
def test_evaleai_normalisation(raw, expected):
    assert normalize(raw) == expected


def test_soft_accuracy_is_the_leave_one_out_min_n_over_3():
    # 2 annotators said it: leaving one of them out leaves 1 match (1/3); leaving out any of the
    # other 8 leaves 2 (2/3): (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    assert soft_accuracy("Coca Cola", ["coca cola"] * 2 + ["pepsi"] * 8) == pytest.approx(0.6)
    assert soft_accuracy("two", ["2"] * 10) == 1.0
    assert soft_accuracy("fanta", ["coca cola"] * 10) == 0.0
    with pytest.raises(ValueError, match="expected 10 human answers, got 3"):
        soft_accuracy("x", ["x"] * 3)


def test_sqa_accuracy_and_img_accuracy(tmp_path):
    problems = {
        "p1": {"choices": ["a", "b", "c"], "answer": 1},
        "p2": {"choices": ["x", "y"], "answer": 0},
        "p3": {"choices": ["a", "b", "c"], "answer": 2},
        "p4": {"choices": ["a", "b", "c", "d"], "answer": 3},
        "p5": {"choices": ["a", "b"], "answer": 0},
        "p6": {"choices": ["a", "b", "c"], "answer": 0},
    }
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": list(problems)}))
    answers = [
        ans("p1", "B", "<image>\nQ"),
        ans("p2", "A. x", "Q"),
        ans("p3", "The answer is C.", "<image>\nQ"),
        ans("p4", "The answer is D. The answer is A.", "<image>\nQ"),  # two matches: FAILED
        ans("p6", "D", "Q"),
    ]  # D is no option of 3: wrong
    # p5 has no answer: an error, unless partial: then right are p1, p2, p3 of the 5 answered; with
    # an image: p1, p3 of p1, p3, p4
    with pytest.raises(RecordError, match=r"answers: 1 of 6 questions have no answer \(e\.g\. 'p5'\)"):
        vs.sqa(answers, tmp_path)
    r = vs.sqa(answers, tmp_path, allow_partial=True)
    assert (r["correct"], r["count"], r["img_correct"], r["img_count"]) == (3, 5, 2, 3)
    assert r["accuracy"] == pytest.approx(60.0) and r["img_accuracy"] == pytest.approx(200 / 3)
    assert r["coverage"] == {"answered": 5, "questions": 6}


def test_pope_per_category(tmp_path):
    qs = [
        {"question_id": i, "image": f"{i}.jpg", "text": "Is there a dog?", "category": c}
        for i, c in enumerate(["adversarial"] * 3 + ["random"] * 3)
    ]
    jsonl(tmp_path / "q.jsonl", qs)
    (tmp_path / "coco").mkdir()
    jsonl(tmp_path / "coco" / "coco_pope_adversarial.json", [{"label": x} for x in ("yes", "no", "yes")])
    jsonl(tmp_path / "coco" / "coco_pope_random.json", [{"label": x} for x in ("no", "no", "yes")])
    texts = [
        "Yes, there is a dog.",
        "No, there is not.",
        "There is no cat in the image.",  # yes, no, no
        "Yes.",
        "I do not think so",
        "Yes, definitely. No doubt.",
    ]  # yes, no, yes
    r = vs.pope([ans(i, t) for i, t in enumerate(texts)], tmp_path / "q.jsonl", tmp_path / "coco")["by_category"]
    # adversarial: TP 1, TN 1, FN 1 -> acc 2/3, precision 1, recall 1/2, F1 2/3, yes 1/3
    a = r["adversarial"]
    assert (a["accuracy"], a["precision"], a["recall"], a["yes_ratio"]) == pytest.approx((2 / 3, 1.0, 0.5, 1 / 3))
    assert a["f1"] == pytest.approx(2 / 3)
    # random: TP 1, FP 1, TN 1 -> acc 2/3, precision 1/2, recall 1, F1 2/3, yes 2/3
    b = r["random"]
    assert (b["accuracy"], b["precision"], b["recall"], b["f1"], b["yes_ratio"]) == pytest.approx(
        (2 / 3, 0.5, 1.0, 2 / 3, 2 / 3)
    )


def mme_folder(root):
    """existence (question files beside the images), artwork (images/ and questions_answers_YN/),
    code_reasoning: MME's two layouts."""
    ex = root / "existence"
    ex.mkdir(parents=True)
    (ex / "1.txt").write_text(
        "Is there a train? Please answer yes or no.\tYes\nIs there a bed? Please answer yes or no.\tNo\n"
    )
    (ex / "2.txt").write_text(
        "Is there a cat? Please answer yes or no.\tYes\nIs there a car? Please answer yes or no.\tNo\n"
    )
    art = root / "artwork"
    (art / "images").mkdir(parents=True)
    (art / "questions_answers_YN").mkdir()
    (art / "questions_answers_YN" / "7.txt").write_text(
        "Is this by Monet?  Please answer yes or no.\tYes\nIs this by Goya? Please answer yes or no.\tNo\n"
    )
    code = root / "code_reasoning"
    code.mkdir()
    (code / "3.txt").write_text(
        "Does it print 1? Please answer yes or no.\tNo\nDoes it print 2? Please answer yes or no.\tYes\n"
    )
    return root


WORD_OR_PHRASE = "\nAnswer the question using a single word or phrase."


def mme_answers(*texts) -> list[dict]:
    """One answer per question of `mme_folder`, in its order, with these replies."""
    yn, wp = " Please answer yes or no.", WORD_OR_PHRASE
    questions = [
        ("existence/1.jpg", "Is there a train?" + yn),
        ("existence/1.jpg", "Is there a bed?" + yn),
        ("existence/2.jpg", "Is there a cat?" + yn),
        ("existence/2.jpg", "Is there a car?" + yn),
        # the prompt without the yes/no instruction: found under the answer file's double space
        ("artwork/7.jpg", "Is this by Monet?" + wp),
        ("artwork/7.jpg", "Is this by Goya?" + yn),
        ("code_reasoning/3.png", "Does it print 1?" + yn),
        ("code_reasoning/3.png", "Does it print 2?" + yn),
    ]
    return [ans(qid, text, prompt) for (qid, prompt), text in zip(questions, texts, strict=True)]


def test_mme_scores_acc_and_acc_plus(tmp_path):
    base = mme_folder(tmp_path / "MME_Benchmark_release_version")
    yn = " Please answer yes or no."
    answers = mme_answers("Yes", "no, there is no bed", "There is.", "No", "yes", "Yes", "no", "yes")
    r = vs.mme(answers, base)
    # existence: 3 of 4 right (75), one image with both right of 2 (50): 125; artwork 50 + 0; code 100 + 100
    assert r["subtasks"] == pytest.approx({"existence": 125.0, "artwork": 50.0, "code_reasoning": 200.0})
    assert r["perception"] == pytest.approx(175.0) and r["cognition"] == pytest.approx(200.0)
    assert "OCR" in r["perception_missing"]
    with pytest.raises(RecordError, match="question_id 'existence/9.jpg' is not a question of this benchmark"):
        vs.mme([ans("existence/9.jpg", "yes", "Is there a dog?" + yn)], base)


def test_textvqa_and_gqa(tmp_path):
    data = {
        "data": [
            {"image_id": "img1", "question": "What brand is this?", "answers": ["coca cola"] * 2 + ["pepsi"] * 8},
            {"image_id": "img2", "question": "How many cups?", "answers": ["2"] * 10},
        ]
    }
    (tmp_path / "val.json").write_text(json.dumps(data))
    answers = [
        ans(
            "img1",
            "Coca Cola.",
            "What brand is this?\nReference OCR token: Coca, Cola\nAnswer the question using a single word or phrase.",
        ),
        ans("img2", "two", "How many cups?\nAnswer the question using a single word or phrase."),
    ]
    r = vs.textvqa(answers, tmp_path / "val.json")
    assert r["accuracy"] == pytest.approx(80.0)  # (0.6 + 1.0) / 2
    questions = {
        "q1": {"answer": "yes", "isBalanced": True},
        "q2": {"answer": "left", "isBalanced": True},
        "q3": {"answer": "red", "isBalanced": False},
    }
    (tmp_path / "gqa.json").write_text(json.dumps(questions))
    r = vs.gqa([ans("q1", "Yes."), ans("q2", "Right"), ans("q3", "red")], tmp_path / "gqa.json")
    assert r == {"accuracy": 50.0, "n": 2, "coverage": {"answered": 2, "questions": 2}}


def png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def mmbench_tsv(path, answer=True):
    header = [
        "index",
        "question",
        "hint",
        "A",
        "B",
        "C",
        "D",
        "answer",
        "category",
        "image",
        "source",
        "l2-category",
        "comment",
        "split",
    ]
    rows = [
        [0, "What colour?", "nan", "green", "red", "blue", "black", "B"],
        [1000000, "What colour?", "nan", "red", "blue", "black", "green", "A"],
        [1, "How many?", "Count them.", "10", "11", "12", "nan", "C"],
        [1000001, "How many?", "Count them.", "11", "12", "10", "nan", "B"],
    ]
    lines = ["\t".join(header)]
    for r in rows:
        r = r if answer else r[:7] + [""]
        lines.append("\t".join(map(str, r + ["color", png_b64(), "src", "l2", "nan", "dev"])))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "text,expected",
    [
        ("B", "B"),
        ("The answer is B.", "B"),  # the local rule used to mark these wrong; the server's takes them
        ("I think B", "B"),
        ("(C) blue", "C"),
        ("**D**", "D"),
        ("A", "A"),
        ("A. green", "A"),
        ("A green apple is on it", "A"),  # 'A' may be the article: the option text decides
        ("A red apple is on it", "B"),
        ("A cat sits on a mat", None),  # the article, and no option's text
        ("B or C", None),  # two letters, no option text
        ("blue", "C"),
        ("It is blue or red", None),  # two option texts
        ("Z", None),
        ("Cannot determine the answer", None),
        ("", None),
    ],
)
def test_mmbench_options_are_read_by_the_servers_rules(text, expected):
    assert vs.option_letter(text, {"A": "green", "B": "red", "C": "blue", "D": "black"}) == expected


def test_mmbench_circular_accuracy(tmp_path):
    tsv = mmbench_tsv(tmp_path / "dev.tsv")
    answers = [
        ans(0, "B"),
        ans(1000000, "A"),  # question 0: right in both rotations
        ans(1, "C. 12"),
        ans(1000001, "I am not sure"),
    ]  # question 1: the second names no option
    r = vs.mmbench(answers, tsv)
    assert (r["circular_accuracy"], r["accuracy"], r["questions"], r["answers"]) == (50.0, 100.0, 2, 4)
    # LLaVA's --all-rounds: rotated options within one row, letters shown A, B, C
    rounds = [
        ans(1, "C", round_id=0, options=["10", "11", "12"], option_char=["A", "B", "C"]),
        ans(1, "B", round_id=1, options=["11", "12", "10"], option_char=["B", "C", "A"]),
        ans(1, "A", round_id=2, options=["12", "10", "11"], option_char=["C", "A", "B"]),
    ]
    assert vs.mmbench(rounds, tsv, allow_partial=True)["circular_accuracy"] == 100.0
    rounds[2]["text"] = "B"
    assert vs.mmbench(rounds, tsv, allow_partial=True)["circular_accuracy"] == 0.0


def test_upload_files(tmp_path):
    from openpyxl import load_workbook

    tsv = mmbench_tsv(tmp_path / "test.tsv", answer=False)
    vs.mmbench_upload([ans(0, "B"), ans(1, "C")], tsv, tmp_path / "up.xlsx")
    rows = list(load_workbook(tmp_path / "up.xlsx").active.values)
    assert rows[0] == ("index", "question", "A", "B", "C", "D", "prediction", "answer", "split")
    assert rows[1][:7] == (0, "What colour?", "green", "red", "blue", "black", "B") and rows[2][6] is None
    with pytest.raises(Exception, match="row 0 has no answer"):
        vs.mmbench([ans(0, "B")], tsv, allow_partial=True)
    jsonl(tmp_path / "viz.jsonl", [{"question_id": i, "image": f"VizWiz_test_{i}.jpg", "text": "?"} for i in range(2)])
    vs.vizwiz_upload([ans(0, "A red Cup."), ans(1, "unanswerable")], tmp_path / "viz.jsonl", tmp_path / "viz.json")
    assert json.loads((tmp_path / "viz.json").read_text()) == [
        {"image": "VizWiz_test_0.jpg", "answer": "red cup"},
        {"image": "VizWiz_test_1.jpg", "answer": "unanswerable"},
    ]


def test_score_command_prints_the_metrics(tmp_path, capsys):
    questions = {"q1": {"answer": "yes"}, "q2": {"answer": "no"}}
    (tmp_path / "gqa.json").write_text(json.dumps(questions))
    jsonl(tmp_path / "a.jsonl", [ans("q1", "yes"), ans("q2", "yes")])
    assert (
        main(
            [
                "score",
                "--benchmark",
                "gqa",
                "--answers",
                str(tmp_path / "a.jsonl"),
                "--questions",
                str(tmp_path / "gqa.json"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == {
        "accuracy": 50.0,
        "n": 2,
        "coverage": {"answered": 2, "questions": 2},
    }
    assert main(["score", "--benchmark", "pope", "--answers", str(tmp_path / "a.jsonl")]) == 2
    assert "--benchmark pope needs --question-file" in capsys.readouterr().err


def scorer_cases(tmp_path):
    """{benchmark: (score(answers, allow_partial), a full answers list)} on the small files above."""
    sqa = tmp_path / "sqa"
    sqa.mkdir()
    problems = {f"p{i}": {"choices": ["a", "b"], "answer": i % 2} for i in range(4)}
    (sqa / "problems.json").write_text(json.dumps(problems))
    (sqa / "pid_splits.json").write_text(json.dumps({"test": list(problems)}))
    pope = tmp_path / "pope"
    (pope / "coco").mkdir(parents=True)
    cats = ["adversarial"] * 3 + ["random"] * 3
    jsonl(
        pope / "q.jsonl",
        [{"question_id": i, "image": f"{i}.jpg", "text": "?", "category": c} for i, c in enumerate(cats)],
    )
    jsonl(
        pope / "coco" / "coco_pope_adversarial.json",
        [{"label": x, "image": f"{i}.jpg"} for i, x in enumerate(("yes", "no", "yes"))],
    )
    jsonl(
        pope / "coco" / "coco_pope_random.json",
        [{"label": x, "image": f"{i + 3}.jpg"} for i, x in enumerate(("no", "no", "yes"))],
    )
    mme = mme_folder(tmp_path / "MME")
    tv = {"data": [{"image_id": f"i{k}", "question": f"What {k}?", "answers": [str(k)] * 10} for k in range(4)]}
    (tmp_path / "tv.json").write_text(json.dumps(tv))
    gqa = {f"q{k}": {"answer": "yes" if k % 2 else "no"} for k in range(4)}
    (tmp_path / "gqa.json").write_text(json.dumps(gqa))
    tsv = mmbench_tsv(tmp_path / "dev.tsv")
    return {
        "sqa": (lambda a, p: vs.sqa(a, sqa, allow_partial=p), [ans(f"p{i}", "AB"[i % 3 % 2], "Q") for i in range(4)]),
        "pope": (
            lambda a, p: vs.pope(a, pope / "q.jsonl", pope / "coco", allow_partial=p),
            [ans(i, t) for i, t in enumerate(["Yes", "No", "No", "Yes", "No", "Yes"])],
        ),
        "mme": (
            lambda a, p: vs.mme(a, mme, allow_partial=p),
            mme_answers("Yes", "Yes", "Yes", "No", "yes", "no", "yes", "yes"),
        ),
        "textvqa": (
            lambda a, p: vs.textvqa(a, tmp_path / "tv.json", allow_partial=p),
            [ans(f"i{k}", str(k * (k % 2)), f"What {k}?" + WORD_OR_PHRASE) for k in range(4)],
        ),
        "gqa": (
            lambda a, p: vs.gqa(a, tmp_path / "gqa.json", allow_partial=p),
            [ans(f"q{k}", "yes") for k in range(4)],
        ),
        "mmbench": (
            lambda a, p: vs.mmbench(a, tsv, allow_partial=p),
            [ans(0, "B"), ans(1000000, "B"), ans(1, "C"), ans(1000001, "B")],
        ),
    }


SCORERS = ("sqa", "pope", "mme", "textvqa", "gqa", "mmbench")


@pytest.mark.parametrize("name", SCORERS)
def test_every_scorer_pairs_answers_by_question_id_not_by_position(tmp_path, name):
    score, answers = scorer_cases(tmp_path)[name]
    full = score(answers, False)
    for seed in range(3):
        shuffled = list(answers)
        random.Random(seed).shuffle(shuffled)
        assert score(shuffled, False) == full
    assert full["coverage"] == {"answered": len(answers), "questions": len(answers)}


@pytest.mark.parametrize("name", SCORERS)
def test_every_scorer_refuses_missing_extra_duplicate_and_no_answers(tmp_path, name):
    score, answers = scorer_cases(tmp_path)[name]
    with pytest.raises(RecordError, match=r"questions have no answer .*pass --allow-partial"):
        score(answers[:-1], False)
    partial = score(answers[:-1], True)
    assert partial["coverage"] == {"answered": len(answers) - 1, "questions": len(answers)}
    assert partial == score(list(reversed(answers[:-1])), True)
    with pytest.raises(RecordError, match="is answered more than once"):
        score(answers + answers[:1], True)
    stray = dict(answers[0], question_id="another/benchmark.jpg" if name == "mme" else 987654)
    with pytest.raises(RecordError, match="is not a question of this benchmark's question file"):
        score(answers + [stray], True)
    with pytest.raises(RecordError, match="no answers to score"):
        score([], True)


def test_score_command_names_the_answers_file_and_allows_partial_on_request(tmp_path, capsys):
    questions = {"q1": {"answer": "yes"}, "q2": {"answer": "no"}}
    (tmp_path / "gqa.json").write_text(json.dumps(questions))
    jsonl(tmp_path / "a.jsonl", [ans("q1", "yes")])
    args = [
        "score",
        "--benchmark",
        "gqa",
        "--answers",
        str(tmp_path / "a.jsonl"),
        "--questions",
        str(tmp_path / "gqa.json"),
    ]
    assert main(args) == 1
    assert "a.jsonl: 1 of 2 questions have no answer (e.g. 'q2')" in capsys.readouterr().err
    assert main(args + ["--allow-partial"]) == 0
    assert json.loads(capsys.readouterr().out)["coverage"] == {"answered": 1, "questions": 2}
    (tmp_path / "empty.jsonl").write_text("")
    args[args.index("--answers") + 1] = str(tmp_path / "empty.jsonl")
    assert main(args) == 1
    assert "empty.jsonl: no answers to score" in capsys.readouterr().err
