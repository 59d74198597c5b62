"""The answering side of the helpfulness benchmarks: LLaVA's question files in, LLaVA's answers
format out, each prompt built as the LLaVA script builds it, padded pixels, resumable and in
question order."""

import json

import numpy as np
import pytest
from PIL import Image

from tests import tiny
from tests.evaluate.helpfulness.test_vqa_scoring import jsonl, mmbench_tsv
from vlguard_jax.data.images import pixels
from vlguard_jax.evaluate.__main__ import main
from vlguard_jax.evaluate.helpfulness import vqa

VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vqa")
    ns = tiny.build(tmp / "model", scale=5.0)
    (tmp / "img").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 40, 3), np.uint8)).save(tmp / "img" / "wide.png")
    Image.new("RGB", (30, 30), (0, 200, 0)).save(tmp / "img" / "square.png")
    return ns, tmp


def decoded(ns, ids):
    image = ns.cfg.image_token_index
    keep = [t for t in ids if t != image]
    return ns.tok.decode(keep, skip_special_tokens=True), ids.count(image)


def test_loader_questions_prompt_pixels_and_answers(env, seen):
    ns, tmp = env
    q = jsonl(
        tmp / "pope.jsonl",
        [
            {
                "question_id": i,
                "image": img,
                "text": f"Is there a dog {i}?\nAnswer the question using a single word or phrase.",
                "category": "random",
            }
            for i, img in enumerate(["wide.png", "square.png", "wide.png"])
        ],
    )
    out = tmp / "a" / "pope.jsonl"
    assert (
        main(
            [
                "vqa",
                "--checkpoint",
                str(ns.flax_dir),
                "--question-file",
                str(q),
                "--image-folder",
                str(tmp / "img"),
                "--answers-file",
                str(out),
                "--batch-size",
                "2",
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    prompts, pix, sampling = seen[0]
    text, n_img = decoded(ns, prompts[0])
    assert text.replace("  ", " ") == (
        f"{VICUNA} USER: \nIs there a dog 0?\nAnswer the question using a single word or phrase. ASSISTANT:"
    ).replace("  ", " ")
    assert n_img == ns.cfg.vision_config.image_size**2 // 14**2 and sampling.max_new_tokens == 3
    size = ns.cfg.vision_config.image_size
    np.testing.assert_allclose(pix[0], pixels(Image.open(tmp / "img" / "wide.png").convert("RGB"), size, pad=True))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["question_id"] for x in lines] == [0, 1, 2]
    assert set(lines[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert lines[0]["prompt"] == "Is there a dog 0?\nAnswer the question using a single word or phrase."
    assert lines[0]["model_id"] == "flax" and lines[0]["metadata"] == {}


def test_resume_keeps_answers_and_question_order(env, tmp_path):
    ns, tmp = env
    gen, loaded = vqa_generator(ns)
    qs = [vqa.Question(i, "<image>\nQ" + str(i), "Q" + str(i), image="square.png") for i in range(5)]
    out = tmp_path / "a.jsonl"
    first = vqa.answer(
        gen, loaded, [qs[3], qs[1]], out, conv_mode="vicuna_v1", image_folder=tmp / "img", max_new_tokens=2
    )
    lines = vqa.answer(
        gen, loaded, qs, out, conv_mode="vicuna_v1", image_folder=tmp / "img", max_new_tokens=2, log=lambda *_: None
    )
    assert [x["question_id"] for x in lines] == [0, 1, 2, 3, 4]
    assert [json.loads(x)["question_id"] for x in out.read_text().splitlines()] == [0, 1, 2, 3, 4]
    kept = {x["question_id"]: x["answer_id"] for x in first}
    assert all(x["answer_id"] == kept[x["question_id"]] for x in lines if x["question_id"] in kept)


def vqa_generator(ns):
    import jax.numpy as jnp

    from vlguard_jax.generate import load_generator

    return load_generator(ns.flax_dir, batch_size=2, dtype=jnp.float32)


def test_science_and_mmbench_prompts(env, tmp_path, seen):
    ns, tmp = env
    sqa = [
        {
            "id": "1",
            "image": "square.png",
            "conversations": [
                {"from": "human", "value": "<image>\nContext: a field.\nWhich is green?\nA. grass\nB. sky"},
                {"from": "gpt", "value": "A"},
            ],
        },
        {
            "id": "2",
            "conversations": [
                {"from": "human", "value": "Which is a fruit?\nA. apple\nB. stone"},
                {"from": "gpt", "value": "A"},
            ],
        },
    ]
    (tmp_path / "sqa.json").write_text(json.dumps(sqa))
    qs = vqa.read_questions(tmp_path / "sqa.json", single_pred=True)
    assert qs[0].text == ("<image>\nContext: a field.\nWhich is green?\nA. grass\nB. sky\n" + vqa.SINGLE_PRED)
    assert qs[0].prompt == qs[0].text and qs[1].text == "Which is a fruit?\nA. apple\nB. stone\n" + vqa.SINGLE_PRED
    assert qs[1].image is None
    tsv = mmbench_tsv(tmp_path / "dev.tsv")
    rounds = vqa.read_questions(tsv, single_pred=True, all_rounds=True)
    assert len(rounds) == 4 + 4 + 3 + 3
    assert rounds[0].text == "<image>\nWhat colour?\nA. green\nB. red\nC. blue\nD. black\n" + vqa.SINGLE_PRED
    assert rounds[1].prompt == "What colour?\nA. red\nB. blue\nC. black\nD. green"
    assert rounds[8].prompt == "Count them.\nHow many?\nA. 10\nB. 11\nC. 12"  # the hint first, 3 options
    assert dict(rounds[9].extra) == {"round_id": 1, "options": ["11", "12", "10"], "option_char": ["B", "C", "A"]}
    out = tmp_path / "mmb.jsonl"
    assert (
        main(
            [
                "vqa",
                "--checkpoint",
                str(ns.flax_dir),
                "--question-file",
                str(tsv),
                "--answers-file",
                str(out),
                "--single-pred-prompt",
                "--max-new-tokens",
                "2",
                "--limit",
                "3",
            ]
        )
        == 0
    )
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["question_id"] for x in lines] == [0, 1000000, 1] and all(x["round_id"] == 0 for x in lines)
    assert lines[2]["options"] == ["10", "11", "12"] and lines[2]["option_char"] == ["A", "B", "C"]
    assert seen[-1][2].max_new_tokens == 2 and all(p is not None for p in seen[-1][1])


def test_bad_question_files_are_named(env, tmp_path, capsys):
    ns, _ = env
    (tmp_path / "q.jsonl").write_text('{"question_id": 1, "text": "no image"}\n')
    args = ["vqa", "--checkpoint", str(ns.flax_dir), "--answers-file", str(tmp_path / "a.jsonl")]
    assert main(args + ["--question-file", str(tmp_path / "q.jsonl")]) == 1
    assert "q.jsonl: question 1: expected question_id, image and text" in capsys.readouterr().err
    (tmp_path / "q.csv").write_text("x")
    assert main(args + ["--question-file", str(tmp_path / "q.csv")]) == 1
    assert "a question file is .jsonl (LLaVA's), .json (ScienceQA) or .tsv (MMBench)" in capsys.readouterr().err


def pope_questions(path, n=6, duplicate=False):
    rows = [{"question_id": i, "image": "square.png", "text": f"Is there a cat {i}?"} for i in range(n)]
    if duplicate:
        rows[3]["question_id"] = 1
    return jsonl(path, rows)


def vqa_args(ns, tmp, questions, answers, *extra):
    return [
        "vqa",
        "--checkpoint",
        str(ns.flax_dir),
        "--question-file",
        str(questions),
        "--image-folder",
        str(tmp / "img"),
        "--answers-file",
        str(answers),
        "--max-new-tokens",
        "2",
        *extra,
    ]


def ids_in(path) -> list:
    return [json.loads(x)["question_id"] for x in path.read_text().splitlines()]


def test_an_answers_file_is_one_checkpoints_and_one_question_files_and_never_shrinks(env, tmp_path, capsys):
    ns, tmp = env
    q = pope_questions(tmp_path / "q.jsonl")
    out = tmp_path / "a.jsonl"
    assert main(vqa_args(ns, tmp, q, out)) == 0
    lines = out.read_text()
    assert ids_in(out) == list(range(6))
    # a smaller --limit answers nothing new and deletes nothing
    assert main(vqa_args(ns, tmp, q, out, "--limit", "3")) == 0
    assert out.read_text() == lines
    capsys.readouterr()
    # another checkpoint, another question file, or a file with no run record: refused, file unchanged
    other = tiny.build(tmp_path / "other", scale=5.0, seed=1)
    args = vqa_args(ns, tmp, q, out)
    args[args.index("--checkpoint") + 1] = str(other.flax_dir)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"a.jsonl: holds answers of {ns.flax_dir}; this run answers with {other.flax_dir}" in err
    q2 = pope_questions(tmp_path / "q2.jsonl", n=4)
    assert main(vqa_args(ns, tmp, q2, out)) == 1
    assert "its responses were generated with other settings (questions" in capsys.readouterr().err
    bare = tmp_path / "bare.jsonl"
    bare.write_text(lines)
    assert main(vqa_args(ns, tmp, q, bare)) == 1
    assert "bare.jsonl: has no record (bare.run.json)" in capsys.readouterr().err
    assert out.read_text() == lines and bare.read_text() == lines


def test_answers_files_refuse_duplicate_ids_inputs_buckets_and_text_only_models(env, tmp_path, capsys):
    ns, tmp = env
    dup = pope_questions(tmp_path / "dup.jsonl", duplicate=True)
    assert main(vqa_args(ns, tmp, dup, tmp_path / "a.jsonl")) == 1
    assert "dup.jsonl: question_id 1 appears more than once" in capsys.readouterr().err
    q = pope_questions(tmp_path / "q.jsonl")
    before = q.read_text()
    assert main(vqa_args(ns, tmp, q, q)) == 2
    assert "--answers-file" in capsys.readouterr().err and q.read_text() == before
    assert main(vqa_args(ns, tmp, q, "s3://bkt/ans.jsonl")) == 1
    assert "--answers-file s3://bkt/ans.jsonl: this output is written locally only" in capsys.readouterr().err
    llm = tiny.build_llama(tmp_path / "llm", tiny.tokenizer(image_token=False), layers=1)
    args = vqa_args(ns, tmp, q, tmp_path / "t.jsonl")
    args[args.index("--checkpoint") + 1] = str(llm.flax_dir)
    assert main(args) == 1
    assert "a text-only LLM" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json") == []  # no run record left
    assert not (tmp_path / "t.jsonl").exists() and not any(p.name.startswith("s3") for p in tmp_path.iterdir())


def test_image_modes_counts_the_images_llavas_scripts_pad_differently(tmp_path, capsys):
    from vlguard_jax.evaluate.helpfulness import image_modes

    (tmp_path / "sub").mkdir()
    Image.new("RGB", (30, 20)).save(tmp_path / "rgb_wide.png")
    Image.new("RGBA", (30, 20)).save(tmp_path / "rgba_wide.png")
    Image.new("P", (30, 20)).save(tmp_path / "sub" / "palette_wide.png")
    Image.new("P", (20, 20)).save(tmp_path / "palette_square.png")
    Image.new("L", (20, 30)).save(tmp_path / "sub" / "grey_tall.jpg")
    Image.new("CMYK", (20, 30)).save(tmp_path / "cmyk_tall.jpg")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("skipped")
    assert image_modes.main([str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 6 and out["by_mode"] == {"CMYK": 1, "L": 1, "P": 2, "RGB": 1, "RGBA": 1}
    assert out["differ"] == 3 and out["differ_by_mode"] == {"CMYK": 1, "L": 1, "P": 1}
    assert out["unreadable"] == [str(tmp_path / "broken.png")]
    # what the count stands for: LLaVA's pad-then-convert differs from ours exactly there
    for name, same in (("rgba_wide.png", True), ("sub/palette_wide.png", False), ("palette_square.png", True)):
        img = Image.open(tmp_path / name)
        side = max(img.size)
        theirs = img  # LLaVA's expand2square: a square image as it is, else padded in its own mode
        if img.size[0] != img.size[1]:
            theirs = Image.new(img.mode, (side, side), (122, 116, 104))
            theirs.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
        ours = pixels(img.convert("RGB"), 28, pad=True)
        assert np.array_equal(pixels(theirs.convert("RGB"), 28, pad=False), ours) == same, name
