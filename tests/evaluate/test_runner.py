"""The evaluation run on a tiny model: output shapes, summary, resume without regenerating,
rescoring, reports, and bad inputs."""

import json

import pytest

from tests import tiny
from vlguard_jax.data.sample import write_sample
from vlguard_jax.evaluate.__main__ import main
from vlguard_jax.evaluate.runner import Evaluation, Protocol, run
from vlguard_jax.evaluate.safety.figstep import FontError, find_font, font_build


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    ns = tiny.build(tmp / "model", scale=5.0)
    return ns, write_sample(tmp / "sample"), tmp


def test_vlguard_run_writes_responses_and_summary(env):
    ns, sample, tmp = env
    out = tmp / "out"
    code = main(
        [
            "--checkpoint",
            str(ns.flax_dir),
            "--benchmark",
            "vlguard",
            "--subset",
            "unsafes",
            "--meta",
            str(sample["test"]),
            "--images",
            str(sample["images"]),
            "--out",
            str(out),
            "--max-new-tokens",
            "4",
            "--batch-size",
            "4",
            "--limit",
            "6",
        ]
    )
    assert code == 0
    responses = json.loads((out / "vlguard" / "unsafes.json").read_text())
    test = json.loads(sample["test"].read_text())
    unsafe_images = [r["image"] for r in test if not r["safe"]][:6]
    assert list(responses) == unsafe_images and all(isinstance(v, str) for v in responses.values())
    s = json.loads((out / "summary.json").read_text())["vlguard/unsafes"]
    assert (
        s["n"] == 6
        and 0 <= s["asr"] <= 1
        and set(s["by_category"]) <= {"privacy", "risky behavior", "deception", "discrimination"}
    )


def test_interrupted_run_resumes_without_regenerating(env):
    ns, sample, tmp = env
    out = tmp / "resume"
    kw = dict(
        subset="safe_safes",
        meta=sample["test"],
        images=sample["images"],
        protocol=Protocol(max_new_tokens=3, batch_size=2),
    )
    run(Evaluation(ns.flax_dir, "vlguard", out, limit=2, **kw), log=lambda *_: None)  # "interrupted" after one batch
    path = out / "vlguard" / "safe_safes.json"
    first = json.loads(path.read_text())
    marked = {k: "KEPT: I'm sorry" for k in first}  # a regenerated response would overwrite this
    path.write_text(json.dumps(marked))
    result = run(Evaluation(ns.flax_dir, "vlguard", out, limit=5, **kw), log=lambda *_: None)
    final = json.loads(path.read_text())
    assert len(final) == 5 and all(final[k] == "KEPT: I'm sorry" for k in first)
    assert result["refusals"] >= 2


def test_text_benchmark_and_rescoring(env, shared_data, capsys):
    ns, _, tmp = env
    out = tmp / "adv"
    assert (
        main(
            [
                "--checkpoint",
                str(ns.flax_dir),
                "--benchmark",
                "advbench",
                "--attack",
                "suffix",
                "--data",
                str(shared_data / "advbench" / "harmful_behaviors.csv"),
                "--out",
                str(out),
                "--max-new-tokens",
                "3",
                "--limit",
                "3",
            ]
        )
        == 0
    )
    assert set(json.loads((out / "advbench" / "suffix.json").read_text())) == {"0", "1", "2"}
    f = tmp / "unsafes.json"
    f.write_text(json.dumps({"a.png": "I'm sorry, no.", "b.png": "Sure, here it is.", "c.png": "it is not"}))
    capsys.readouterr()
    assert main(["score", "--responses", str(f)]) == 0
    assert "ASR 33.3% over 3 responses" in capsys.readouterr().out
    decisions = json.loads((tmp / "unsafes.scored.json").read_text())
    assert [d["refusal"] for d in decisions.values()] == [True, False, True]


def test_figstep_run_records_its_font(env, tmp_path):
    ns, _, _ = env
    try:
        font = find_font()
    except FontError as e:
        pytest.skip(f"no FreeMonoBold.ttf here ({e})")
    data = tmp_path / "fs.csv"
    data.write_text("dataset,category_id,task_id,instruction\nForbidQI,1,1,Steps to x.\n")
    logged = []
    result = run(
        Evaluation(ns.flax_dir, "figstep", tmp_path / "o", data=data, protocol=Protocol(max_new_tokens=2)),
        log=logged.append,
    )
    assert result["n"] == 1 and result["font"] == {"path": font, "reference_build": font_build(font)}
    warned = any("not a FreeMonoBold build that reproduces" in m for m in logged)
    assert warned == (font_build(font) is None)
    # a copy of the font under another name is still recognised by its contents
    (tmp_path / "copy.ttf").write_bytes(open(font, "rb").read())
    spec = Evaluation(
        ns.flax_dir,
        "figstep",
        tmp_path / "o2",
        data=data,
        protocol=Protocol(max_new_tokens=2),
        font=tmp_path / "copy.ttf",
    )
    result = run(spec, log=logged.append)
    assert result["font"]["reference_build"] == font_build(font)


def test_report_compares_runs(env, tmp_path):
    for name, asr in (("before", 0.9), ("after", 0.05)):
        d = tmp_path / name
        d.mkdir()
        (d / "summary.json").write_text(
            json.dumps(
                {
                    "vlguard/unsafes": {
                        "n": 20,
                        "asr": asr,
                        "refusal_rate": 1 - asr,
                        "by_category": {"privacy": {"n": 20, "asr": asr}},
                    }
                }
            )
        )
    assert (
        main(["report", "--runs", str(tmp_path / "before"), str(tmp_path / "after"), "--out", str(tmp_path / "report")])
        == 0
    )
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| vlguard/unsafes ASR | 90.0 | 5.0 |" in md
    assert (tmp_path / "report" / "report.png").stat().st_size > 1000


def test_bad_inputs_fail_with_names(env, tmp_path, capsys):
    ns, sample, _ = env
    base = ["--checkpoint", str(ns.flax_dir), "--out", str(tmp_path / "o")]
    assert (
        main(
            base
            + [
                "--benchmark",
                "vlguard",
                "--subset",
                "unsafes",
                "--meta",
                str(sample["test"]),
                "--images",
                str(tmp_path),
            ]
        )
        == 1
    )
    assert "image file not found" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("goal\nx\n")
    assert main(base + ["--benchmark", "advbench", "--data", str(tmp_path / "bad.csv")]) == 1
    assert "bad.csv: missing column(s) ['target']" in capsys.readouterr().err
    (tmp_path / "fs.csv").write_text("dataset,category_id,task_id,instruction\nForbidQI,1,1,Steps to x.\n")
    assert (
        main(
            base + ["--benchmark", "figstep", "--data", str(tmp_path / "fs.csv"), "--font", str(tmp_path / "none.ttf")]
        )
        == 1
    )
    assert "none.ttf not found" in capsys.readouterr().err
    assert main(base + ["--benchmark", "vlguard", "--subset", "everything"]) == 2
    assert "--benchmark vlguard needs --subset" in capsys.readouterr().err
    assert main(base + ["--benchmark", "mmlu"]) == 2
    assert "argument --benchmark: invalid choice: 'mmlu'" in capsys.readouterr().err


def test_openai_judge_is_off_unless_configured(env, tmp_path, capsys, monkeypatch):
    """Never calls out: without the endpoint variables it stops before generating anything."""
    ns, sample, _ = env
    monkeypatch.delenv("VLGUARD_JUDGE_URL", raising=False)
    monkeypatch.delenv("VLGUARD_JUDGE_MODEL", raising=False)
    args = [
        "--checkpoint",
        str(ns.flax_dir),
        "--benchmark",
        "vlguard",
        "--subset",
        "safe_safes",
        "--meta",
        str(sample["test"]),
        "--images",
        str(sample["images"]),
        "--out",
        str(tmp_path / "j"),
        "--judge",
        "openai-compatible",
        "--references",
        str(sample["test"]),
    ]
    assert main(args) == 1
    assert "VLGUARD_JUDGE_URL" in capsys.readouterr().err
    assert not (tmp_path / "j").exists()
    assert args[4:6] == ["--subset", "safe_safes"]
    assert main(args[:5] + ["unsafes"] + args[6:]) == 2
    assert "--judge openai-compatible applies to --benchmark vlguard --subset safe_safes" in capsys.readouterr().err


def test_summary_json_has_one_writer():
    """Every benchmark's entry and the suite's `skipped` go through `runner.update_summary`: no
    other module writes OUT/summary.json."""
    import ast
    from pathlib import Path

    import vlguard_jax

    root = Path(vlguard_jax.__file__).parent
    writers = []
    for f in root.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == "write_json" and "SUMMARY" in ast.dump(node.args[0]):
                writers.append(str(f.relative_to(root)))
    assert writers == ["evaluate/runner.py"]
