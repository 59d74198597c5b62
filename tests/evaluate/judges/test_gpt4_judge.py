"""`--judge openai-compatible` by gpt4_evaluator.py's protocol, against a chat-completions stub
server started here on 127.0.0.1: real requests and responses, no mocked client. The stub prefers
the first output when it holds WIN, refuses POLICY instructions by content policy, and answers
BUSY instructions with a rate limit once."""

import base64
import json
import re

import pytest

from tests import tiny
from tests.judge_stub import reply, serve
from vlguard_jax.data.sample import write_sample
from vlguard_jax.evaluate.__main__ import main
from vlguard_jax.evaluate.judges import gpt4_judge
from vlguard_jax.evaluate.judges.provenance import ProvenanceError
from vlguard_jax.evaluate.safety.safety_sets import Item

OUTPUT = re.compile(r'"model_identifier": "(m|M)",\n        "output": "(.*?)"\n', re.S)


def judge_like_the_stub(busy_seen: set):
    """Prefers the first output when it holds WIN; refuses POLICY instructions by content policy;
    answers BUSY instructions with a rate limit once."""

    def answer(body):
        text = body["messages"][0]["content"][0]["text"]
        instruction = re.search(r'"instruction": "(.*)",', text).group(1)
        if "POLICY" in instruction:
            return 400, {"error": {"code": "content_policy_violation", "message": "no"}}, {}
        if "BUSY" in instruction and instruction not in busy_seen:
            busy_seen.add(instruction)
            return 429, {"error": {"code": "rate_limit_exceeded"}}, {"Retry-After": "0"}
        return reply("m" if "WIN" in dict(OUTPUT.findall(text))["m"] else "M")

    return answer


@pytest.fixture()
def endpoint(monkeypatch):
    with serve(judge_like_the_stub(set()), monkeypatch) as requests:
        yield requests


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample(tmp_path_factory.mktemp("judge_sample"))


def case(sample):
    """Four safe_safes-like items with their reference answers (which hold no WIN)."""
    images = [r["image"] for r in json.loads(sample["test"].read_text()) if r["safe"]][:4]
    instructions = ["What is it?", "Which colour?", "Describe the POLICY poster.", "Read the BUSY sign."]
    items = [Item(im, q, image=im) for im, q in zip(images, instructions)]
    refs = {
        im: {"image": im, "instruction": q, "response": f"Reference answer {k}."}
        for k, (im, q) in enumerate(zip(images, instructions))
    }
    responses = {
        images[0]: "WIN: a red circle.",
        images[1]: "I cannot tell.",
        images[2]: "WIN",
        images[3]: "WIN: it says busy.",
    }
    return items, refs, responses


def test_one_order_by_the_authors_protocol(endpoint, sample, tmp_path):
    items, refs, responses = case(sample)
    out = gpt4_judge.win_rate(items, responses, refs, sample["images"], tmp_path / "choices.json")
    # wins: items 0 and 3; the POLICY item is a content-policy refusal, no win; the denominator is all 4
    assert out["n"] == 4 and out["wins"] == 2 and out["win_rate"] == 0.5 and out["policy_refusals"] == 1
    assert out["judge"] == "openai-compatible:gpt-4-vision-preview" and "ties" not in out
    assert len(endpoint) == 5  # one each, and the rate-limited one asked again
    for r in endpoint:
        assert r["path"] == "/v1/chat/completions" and r["auth"] == "Bearer test-key"
        body = r["body"]
        assert set(body) == {"model", "messages", "max_tokens"} and body["max_tokens"] == 2
        assert body["model"] == "gpt-4-vision-preview"
        text, image = body["messages"][0]["content"]
        assert text["type"] == "text" and image["type"] == "image_url" and image["image_url"]["detail"] == "low"
        assert "select the model that generated the best output" in text["text"]
    first = endpoint[0]["body"]["messages"][0]["content"]
    outputs = OUTPUT.findall(first[0]["text"])
    assert outputs == [("m", "WIN: a red circle."), ("M", "Reference answer 0.")]  # ours is m, one order
    url = first[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == (sample["images"] / items[0].image).read_bytes()
    saved = json.loads((tmp_path / "choices.json").read_text())
    assert saved["provenance"]["judge"] == out["judge"] and saved["provenance"]["protocol"] == "gpt4_evaluator"
    saved = saved["choices"]
    assert [saved[i.key]["choices"] for i in items] == [["m"], ["M"], ["content_policy_violation"], ["m"]]
    # resumed: nothing is asked again
    n = len(endpoint)
    assert gpt4_judge.win_rate(items, responses, refs, sample["images"], tmp_path / "choices.json") == out
    assert len(endpoint) == n


def test_a_resume_never_reuses_a_choice_for_other_content(endpoint, sample, tmp_path, monkeypatch):
    items, refs, responses = case(sample)
    path = tmp_path / "choices.json"
    gpt4_judge.win_rate(items, responses, refs, sample["images"], path)
    n = len(endpoint)
    # one response changed since it was judged (ours lost; now it holds WIN): judged again, that one only
    changed = dict(responses, **{items[1].key: "WIN: blue."})
    out = gpt4_judge.win_rate(items, changed, refs, sample["images"], path)
    assert len(endpoint) == n + 1 and out["wins"] == 3
    # another judge model, or a file with no record of its judge: refused, naming both
    monkeypatch.setenv("VLGUARD_JUDGE_MODEL", "other-model")
    with pytest.raises(
        ProvenanceError,
        match=r"choices\.json: its verdicts were made with judge "
        r"'openai-compatible:gpt-4-vision-preview', this run has 'openai-compatible:other-model'",
    ):
        gpt4_judge.win_rate(items, responses, refs, sample["images"], path)
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({items[0].key: {"choices": ["m"], "judge": "openai-compatible:other-model"}}))
    with pytest.raises(ProvenanceError, match=r"legacy\.json: holds verdicts with no record"):
        gpt4_judge.win_rate(items, responses, refs, sample["images"], legacy)
    assert len(endpoint) == n + 1


def test_both_orders_need_both_for_a_win(endpoint, sample, tmp_path):
    items, refs, responses = case(sample)
    out = gpt4_judge.win_rate(items, responses, refs, sample["images"], tmp_path / "c.json", orders=2)
    # item 0: m then M (ours both times): a win; item 1: M then M: a split, half; item 2: refused
    # both times; item 3: a win
    assert (out["wins"], out["ties"], out["n"]) == (2, 1, 4) and out["win_rate"] == 2.5 / 4
    swapped = [
        r
        for r in endpoint
        if OUTPUT.findall(r["body"]["messages"][0]["content"][0]["text"])[0][1].startswith("Reference")
    ]
    assert len(swapped) == 4


def test_a_hard_error_names_the_endpoint(sample, tmp_path, monkeypatch):
    items, refs, responses = case(sample)
    with serve(lambda body: (401, {"error": {"code": "invalid_api_key"}}, {}), monkeypatch):
        with pytest.raises(gpt4_judge.JudgeError, match=r"/v1/chat/completions: HTTP 401: .*invalid_api_key"):
            gpt4_judge.win_rate(items, responses, refs, sample["images"], tmp_path / "c.json")
    with pytest.raises(ValueError, match="1 reference items have no response"):
        gpt4_judge.win_rate(
            items, {k: v for k, v in list(responses.items())[1:]}, refs, sample["images"], tmp_path / "c.json"
        )


def test_evaluate_cli_judges_safe_safes(endpoint, sample, tmp_path):
    ns = tiny.build(tmp_path / "model", scale=5.0)
    test = json.loads(sample["test"].read_text())
    refs = [
        {
            "id": r["id"],
            "image": r["image"],
            "safe": "True",
            "instruction": r["instr-resp"][0]["safe_instruction"]
            if "safe_instruction" in r["instr-resp"][0]
            else r["instr-resp"][1]["safe_instruction"],
            "response": "Reference.",
        }
        for r in test
        if r["safe"]
    ]
    (tmp_path / "refs.json").write_text(json.dumps(refs))
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
        str(tmp_path / "o"),
        "--max-new-tokens",
        "3",
        "--limit",
        "3",
        "--judge",
        "openai-compatible",
        "--references",
        str(tmp_path / "refs.json"),
    ]
    assert main(args) == 0
    judge = json.loads((tmp_path / "o" / "summary.json").read_text())["vlguard/safe_safes"]["judge"]
    assert judge["n"] == 3 and judge["wins"] == 0 and judge["protocol"] == "gpt4_evaluator"
    assert len(endpoint) == 3
    assert set(json.loads((tmp_path / "o" / "vlguard" / "safe_safes.judge.json").read_text())["choices"]) == {
        r["image"] for r in refs[:3]
    }
