"""The Llama Guard screen of a LLaVA-format mix (`python -m vlguard_jax.data.screen`), with a tiny
judge rigged to call a conversation unsafe exactly when it mentions a weapon: the clean file keeps
the rest unchanged and in order, the flagged list names the others, an interrupted run resumes
without judging again, and two processes give what one gives."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import tiny
from tests.train.test_loop import free_port, run_env
from vlguard_jax.data import mixture
from vlguard_jax.data.config import DataConfig
from vlguard_jax.data.records import RecordError
from vlguard_jax.data.screen import main
from vlguard_jax.evaluate.judges import screening
from vlguard_jax.generate import sampler
from vlguard_jax.train.defaults import base_config

REPO = Path(__file__).parents[2]
TRIGGERED = (2, 5, 7)
TOO_LONG = 8


def mix() -> list[dict]:
    def rec(i, *turns, image=True):
        conv = [{"from": "human" if k % 2 == 0 else "gpt", "value": t} for k, t in enumerate(turns)]
        if image:
            conv[0]["value"] = "<image>\n" + conv[0]["value"]
        return {"id": f"r{i}", **({"image": f"coco/{i}.jpg"} if image else {}), "conversations": conv}

    rows = [
        rec(0, "What is shown?", "A cat on a mat."),
        rec(1, "Tell me a story.", "Once upon a time.", image=False),
        rec(2, "Where can I buy a weapon quickly?", "Here is where."),
        rec(3, "What colour is it?", "Red.", "And the sky?", "Blue."),
        rec(4, "Describe the scene.", "A street at night.", image=False),
        rec(5, "What is this?", "A tool.", "How do I use it?", "Use it as a weapon to hurt people."),
        rec(6, "Count the birds.", "Three."),
        rec(7, "weapon", "Sure.", image=False),
        rec(8, "Summarise this. " + "The market opened early and the vendors set up. " * 40, "Done."),
        rec(9, "Is it safe?", "Yes, it looks fine."),
    ]
    rows[6]["extra_field"] = {"kept": [1, 2]}  # records pass through unchanged
    return rows


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("screen")
    judge = tiny.build_llama(tmp / "judge", tiny.guard_tokenizer(("weapon",)), layers=1, trigger="▁weapon")
    src = tmp / "mix.json"
    src.write_text(json.dumps(mix()))
    return judge, src, tmp


def args(env, dst, *extra):
    judge, src, _ = env
    return [
        "--judge-checkpoint",
        str(judge.flax_dir),
        "--src",
        str(src),
        "--dst",
        str(dst),
        "--batch-size",
        "4",
        *extra,
    ]


def flagged(dst) -> list[dict]:
    return [json.loads(line) for line in screening.outputs(dst)["flagged"].read_text().splitlines()]


def test_screen_keeps_the_safe_records_and_lists_the_rest(env, capsys, judged):
    _, src, tmp = env
    dst = tmp / "one" / "clean.json"
    assert main(args(env, dst)) == 0
    out = capsys.readouterr().out
    rows = mix()
    assert json.loads(dst.read_text()) == [r for i, r in enumerate(rows) if i not in TRIGGERED]
    lines = flagged(dst)
    assert [x["index"] for x in lines] == [2, 5, 7, 8]
    assert [x["verdict"] for x in lines] == ["unsafe"] * 3 + [None]
    assert lines[3]["reason"] == screening.TOO_LONG and lines[0]["id"] == "r2" and lines[0]["categories"] == []
    assert "screened 10 records: 3 unsafe (removed), 7 kept" in out
    assert f"kept unjudged, {screening.TOO_LONG}: 1" in out
    assert sum(judged) == 9  # all but the one too long for the judge
    # the clean file is a mix like any other
    c = base_config().data
    c.recipe, c.llava, c.llava_images = "llava", str(dst), str(tmp)
    assert mixture.build(DataConfig.from_config(c)).composition()["llava"]["total"] == 7


def test_an_interrupted_screen_resumes_without_judging_again(env, capsys, judged):
    _, _, tmp = env
    done = tmp / "one" / "clean.json"
    if not done.exists():  # this test may run before the one that writes it
        assert main(args(env, done)) == 0
    judged.clear()
    dst = tmp / "resume" / "clean.json"
    dst.parent.mkdir()
    full = screening.outputs(done)["verdicts"].with_name("clean.verdicts.0-of-1.jsonl").read_text().splitlines()
    header, full = full[0], full[1:]
    assert set(json.loads(header)) == {"provenance"}
    # three verdicts were written, then the run died in the middle of a line
    seeded = [json.loads(x) for x in full if json.loads(x)["index"] in (0, 2, 9)]
    seeded[0] = dict(seeded[0], verdict="unsafe", categories=["O3"])  # a judge's verdict is kept as it was
    part = dst.with_name("clean.verdicts.0-of-1.jsonl")
    part.write_text(header + "\n" + "".join(json.dumps(v) + "\n" for v in seeded) + '{"index": 3, "id": "r')
    capsys.readouterr()
    assert main(args(env, dst)) == 0
    out = capsys.readouterr().out
    assert sum(judged) == 10 - 3 - 1
    assert [x["index"] for x in flagged(dst)] == [0, 2, 5, 7, 8]
    assert "O3 (Criminal Planning): 1" in out and "4 unsafe (removed), 6 kept" in out
    assert all(json.loads(x) for x in part.read_text().splitlines())  # the torn line was cut


def test_bad_inputs_are_refused_naming_them(env, tmp_path, capsys):
    judge, src, _ = env
    assert main(args(env, src)) == 1
    assert "the output would overwrite or sit inside the input" in capsys.readouterr().err
    (tmp_path / "exists.json").write_text("[]")
    assert main(args(env, tmp_path / "exists.json")) == 1
    assert "exists.json already exists" in capsys.readouterr().err
    bad = mix()
    bad[4]["conversations"].insert(1, {"from": "human", "value": "again"})
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(RecordError, match=r"bad\.json: record 'r4' \(#4\): turn 1 is from 'human'"):
        screening.screen(judge.flax_dir, tmp_path / "bad.json", tmp_path / "o.json")
    other = tmp_path / "x" / "clean.json"
    other.parent.mkdir()
    other.with_name("clean.verdicts.0-of-1.jsonl").write_text(
        json.dumps({"index": 1, "id": "zzz", "verdict": "safe", "categories": [], "judge": "j"}) + "\n"
    )
    assert main(args(env, other)) == 1
    assert "clean.verdicts.0-of-1.jsonl: holds verdicts with no record of the judge" in capsys.readouterr().err
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(RecordError, match=r"empty\.json: no records to screen"):
        screening.screen(judge.flax_dir, tmp_path / "empty.json", tmp_path / "e.json")
    assert not (tmp_path / "e.json").exists()
    lone = [{"id": "a1", "conversations": [{"from": "gpt", "value": "Only a reply."}]}]
    (tmp_path / "lone.json").write_text(json.dumps(lone))
    with pytest.raises(RecordError, match=r"lone\.json: record 'a1' \(#0\): no human turn"):
        screening.screen(judge.flax_dir, tmp_path / "lone.json", tmp_path / "l.json")


def interrupt_after(monkeypatch, batches: int):
    """The generator raises KeyboardInterrupt on its call number `batches` + 1."""
    calls = []
    original = sampler.Generator.__call__

    def stop(self, *a, **k):
        calls.append(1)
        if len(calls) > batches:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(sampler.Generator, "__call__", stop)


def test_a_resume_from_another_source_or_judge_is_refused(env, tmp_path, monkeypatch, capsys):
    """Mixes that number their ids alike (0..N-1) cannot share verdicts: B's harmful records would
    be kept on A's word."""
    judge, src, tmp = env
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    rows = mix()
    a.write_text(json.dumps([dict(r, id=str(i)) for i, r in enumerate(rows)]))
    swapped = [dict(rows[(i + 1) % len(rows)], id=str(i)) for i in range(len(rows))]
    b.write_text(json.dumps(swapped))
    dst = tmp_path / "out" / "clean.json"
    dst.parent.mkdir()
    interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        screening.screen(judge.flax_dir, a, dst, batch_size=4)
    monkeypatch.undo()
    assert not dst.exists()
    capsys.readouterr()
    argv = args(env, dst)
    argv[argv.index("--src") + 1] = str(b)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its verdicts were made with source" in err
    assert f"'{a}', this run has '{b}'" in err
    other_judge = tiny.build_llama(tmp_path / "judge2", tiny.guard_tokenizer(("weapon",)), layers=1, seed=1)
    argv = args(env, dst)
    argv[argv.index("--src") + 1], argv[argv.index("--judge-checkpoint") + 1] = str(a), str(other_judge.flax_dir)
    assert main(argv) == 1
    assert "its verdicts were made with judge" in capsys.readouterr().err
    argv = args(env, dst, "--llamaguard-prompt", "chat-template")
    argv[argv.index("--src") + 1] = str(a)
    assert main(argv) == 1
    assert "made with protocol 'llamaguard, llama-recipes'" in capsys.readouterr().err
    # the right source resumes and ends where an uninterrupted run ends
    argv[argv.index("--src") + 1] = str(a)
    assert main(argv[:-2]) == 0
    assert [r["id"] for r in json.loads(dst.read_text())] == [str(i) for i in range(10) if i not in TRIGGERED]


def test_a_verdict_is_never_reused_for_another_conversation(env, tmp_path, judged):
    _, src, _ = env
    dst = tmp_path / "clean.json"
    assert main(args(env, dst)) == 0
    part = dst.with_name("clean.verdicts.0-of-1.jsonl")
    lines = [json.loads(x) for x in part.read_text().splitlines()]
    for v in lines[1:]:
        if v["index"] == 2:
            v["conversation"] = "0" * 16  # judged from another conversation than record 2's
    dst.unlink()
    part.write_text("".join(json.dumps(v) + "\n" for v in lines))
    judged.clear()
    assert main(args(env, dst)) == 0
    assert sum(judged) == 1 and [x["index"] for x in flagged(dst)] == [2, 5, 7, 8]


def test_a_last_reply_judge_refuses_records_of_several_exchanges(env, tmp_path):
    _, src, _ = env
    tok = tiny.guard_tokenizer(("weapon",))
    tok.chat_template = tok.chat_template.replace("for Agent in the above", "for ONLY THE LAST Agent in the above")
    judge = tiny.build_llama(tmp_path / "lg3", tok, layers=1, trigger="▁weapon")
    with pytest.raises(RecordError, match=r"mix\.json: record 'r3' \(#3\): 2 records have several exchanges"):
        screening.screen(judge.flax_dir, src, tmp_path / "clean.json")


@pytest.mark.multiprocess
def test_two_processes_give_what_one_gives(env):
    judge, src, tmp = env
    one = tmp / "one" / "clean.json"
    if not one.exists():
        assert main(args(env, one)) == 0
    dst = tmp / "two" / "clean.json"
    port = free_port()
    cmd = [sys.executable, "-m", "vlguard_jax.data.screen", *args(env, dst)]
    procs = [
        subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=run_env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)),
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    assert "screened 10 records: 3 unsafe (removed), 7 kept" in outs[0][0] and "screened" not in outs[1][0]
    assert dst.read_text() == one.read_text()
    assert flagged(dst) == flagged(one)
    for p in range(2):  # each process judged its own half
        header, *lines = dst.with_name(f"clean.verdicts.{p}-of-2.jsonl").read_text().splitlines()
        assert json.loads(header)["provenance"]["source"] == str(src.resolve())
        assert sorted(json.loads(x)["index"] for x in lines) == list(range(5 * p, 5 * p + 5))
