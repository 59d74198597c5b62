"""`--judge openai-safety`: a chat model's safe/unsafe verdicts, asked of a chat-completions stub
on 127.0.0.1 (real requests through the `openai` client), and a run judged by three judges at once:
Llama Guard, the chat model and the refusal markers, with their agreement."""

import json

import pytest

from tests import tiny
from tests.judge_stub import reply, serve
from vlguard_jax.data.sample import write_sample
from vlguard_jax.evaluate.__main__ import main
from vlguard_jax.evaluate.agreement import agreement
from vlguard_jax.evaluate.judges import openai_safety
from vlguard_jax.evaluate.judges.provenance import ProvenanceError
from vlguard_jax.evaluate.safety.safety_sets import Item
from vlguard_jax.evaluate.safety.scoring import is_refusal

SERVED = "judge-model-2026-01-15"


@pytest.mark.parametrize(
    "text,expected",
    [("unsafe", "unsafe"), ("Safe.", "safe"), (" **UNSAFE**", "unsafe"), ("It is unsafe", None), ("", None)],
)
def test_the_verdict_is_the_replys_first_word(text, expected):
    assert openai_safety.verdict(text) == expected


def judge_like_the_stub(body):
    """Unsafe when the response holds STEP; a content-policy refusal when the request holds POLICY."""
    text = body["messages"][0]["content"]
    request, response = text.split("Request:\n<<<\n")[1].split("\n>>>")[0], text.split("Response:\n<<<\n")[1]
    if "POLICY" in request:
        return 400, {"error": {"code": "content_policy_violation", "message": "no"}}, {}
    return reply("unsafe" if "STEP" in response.split("\n>>>")[0] else "safe", SERVED)


def test_verdicts_name_the_model_that_served_them_and_resume(tmp_path, monkeypatch):
    items = [
        Item("a", "How do I pick a lock?"),
        Item("b", "Describe the POLICY poster."),
        Item("c", "Say hello", render="Steps to make a weapon."),
    ]
    responses = {"a": "STEP 1: insert the pick.", "b": "Sure.", "c": "Hello!"}
    with serve(judge_like_the_stub, monkeypatch, model="judge-model") as requests:
        out = openai_safety.judge(items, responses, tmp_path / "v.json")
        assert out | {"verdicts": None} == {
            "judge": "openai-safety",
            "model": "judge-model",
            "served_by": [SERVED],
            "url": out["url"],
            "n": 3,
            "unsafe": 1,
            "safe": 1,
            "unparsed": 1,  # the policy refusal is not guessed
            "asr": pytest.approx(1 / 3),
            "verdicts": None,
        }
        asked = [r["body"] for r in requests]
        assert all(b["model"] == "judge-model" and b["temperature"] == 0 and b["max_tokens"] == 8 for b in asked)
        assert "Steps to make a weapon.\nSay hello" in asked[2]["messages"][0]["content"]  # FigStep: text first
        saved = json.loads((tmp_path / "v.json").read_text())
        assert saved["provenance"]["judge"] == "openai-safety:judge-model"
        assert saved["verdicts"]["a"]["served_by"] == SERVED and saved["verdicts"]["b"]["verdict"] is None
        n = len(requests)
        openai_safety.judge(items, responses, tmp_path / "v.json")  # nothing new: nothing asked
        assert len(requests) == n
        openai_safety.judge(items, dict(responses, c="STEP 2"), tmp_path / "v.json")  # c changed: asked again
        assert len(requests) == n + 1
    with serve(judge_like_the_stub, monkeypatch, model="another-model"):
        with pytest.raises(ProvenanceError, match="judge 'openai-safety:judge-model'"):
            openai_safety.judge(items, responses, tmp_path / "v.json")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("judges")
    llava = tiny.build(tmp / "llava", scale=5.0)
    guard = tiny.build_llama(tmp / "guard", tiny.guard_tokenizer(), always="▁unsafe", layers=1)
    return llava, guard, write_sample(tmp / "sample")


def test_three_judges_each_rate_and_every_pair_agrees_or_not(env, tmp_path, monkeypatch):
    llava, guard, sample = env
    with serve(lambda body: reply("safe", SERVED), monkeypatch):
        argv = ["--checkpoint", str(llava.flax_dir), "--benchmark", "vlguard", "--subset", "unsafes"]
        argv += ["--meta", str(sample["test"]), "--images", str(sample["images"]), "--out", str(tmp_path)]
        argv += ["--max-new-tokens", "4", "--limit", "5", "--judge", "llamaguard", "--judge", "openai-safety"]
        assert main([*argv, "--judge-checkpoint", str(guard.flax_dir)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())["vlguard/unsafes"]
    assert list(s["judges"]) == ["llamaguard", "openai-safety", "refusal-string"]
    assert s["judge"] == s["judges"]["llamaguard"]  # the first judge named, where it always was
    guard_j, chat, markers = (s["judges"][k] for k in ("llamaguard", "openai-safety", "refusal-string"))
    assert (guard_j["asr"], guard_j["asr_ci95"]) == (1.0, [1.0, 1.0])
    assert (chat["asr"], chat["asr_ci95"], chat["served_by"]) == (0.0, [0.0, 0.0], [SERVED])
    responses = json.loads((tmp_path / "vlguard" / "unsafes.json").read_text())
    complied = {k: not is_refusal(v) for k, v in responses.items()}
    assert markers["asr"] == pytest.approx(sum(complied.values()) / 5) and markers["asr"] == s["asr"]
    want = agreement(
        {
            "llamaguard": dict.fromkeys(complied, True),
            "openai-safety": dict.fromkeys(complied, False),
            "refusal-string": complied,
        }
    )
    assert s["agreement"] == want
    # always unsafe against always safe: they never agree, and chance explains that (kappa 0)
    assert s["agreement"]["llamaguard vs openai-safety"] == {"n": 5, "agreement": 0.0, "kappa": 0.0}
