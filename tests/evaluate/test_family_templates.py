"""Every command that asks a question asks each family in its own template (`--conv-mode auto`,
`--template auto`) and records which: LLaVA in LLaVA's `vicuna_v1` (its eval scripts' template),
MiniGPT-v2 in `<s>[INST] <Img><image></Img> Q [/INST]`, Qwen2.5-VL in its chat template."""

import json

import pytest

from tests import tiny, tiny_qwen
from tests.evaluate.helpfulness.test_vqa_scoring import jsonl
from tests.evaluate.test_suite import data_root
from tests.minigptv2_reference import write_parts
from vlguard_jax.checkpoints.ref import resolve_checkpoint
from vlguard_jax.conversion.minigptv2 import convert
from vlguard_jax.evaluate.__main__ import main
from vlguard_jax.evaluate.runner import Protocol
from vlguard_jax.evaluate.suite import run_suite

VICUNA_START = "A chat between a curious user and an artificial intelligence assistant."


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("families")
    parts = write_parts(tmp / "parts")
    convert(parts.llm, parts.eva, parts.ckpt, tmp / "minigptv2", dtype="float32", log=lambda _: None)
    llava = tiny.build(tmp / "llava", scale=5.0).flax_dir
    qwen = tiny_qwen.build(tmp / "qwen").flax_dir
    return {"llava": llava, "minigptv2": tmp / "minigptv2", "qwen2_5_vl": qwen}, data_root(tmp / "data"), tmp


TEMPLATE = {"llava": "vicuna_v1", "minigptv2": "minigptv2", "qwen2_5_vl": "qwen2_5_vl"}
QWEN_START = (  # the image's pads are dropped by prompt_text
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|vision_end|>Is there a dog"
)


def prompt_text(ckpt, ids) -> str:
    ref = resolve_checkpoint(ckpt)
    return ref.tokenizer.decode([t for t in ids if t != ref.config.image_token_index])


def asked_in(family: str, ckpt, ids) -> None:
    text = prompt_text(ckpt, ids)
    if family == "llava":
        assert text.startswith("<s> " + VICUNA_START) and text.rstrip().endswith("ASSISTANT:"), text
    elif family == "qwen2_5_vl":
        assert text.startswith(QWEN_START) and text.endswith("<|im_end|>\n<|im_start|>assistant\n"), text
    else:
        assert ids[:2] == [1, 1] and "[INST] <Img> </Img> Is there a dog" in text and text.endswith("[/INST]"), text


@pytest.mark.parametrize("family", sorted(TEMPLATE))
def test_vqa_asks_in_the_familys_template_and_records_it(checkpoints, family, seen, tmp_path):
    ckpts, root, _ = checkpoints
    q = jsonl(tmp_path / "q.jsonl", [{"question_id": 0, "image": "0.jpg", "text": "Is there a dog?"}])
    out = tmp_path / "answers.jsonl"
    argv = ["vqa", "--checkpoint", str(ckpts[family]), "--question-file", str(q), "--answers-file", str(out)]
    assert main([*argv, "--image-folder", str(root / "pope" / "val2014"), "--max-new-tokens", "2"]) == 0
    asked_in(family, ckpts[family], seen[0][0][0])
    record = json.loads((tmp_path / "answers.run.json").read_text())
    assert record["protocol"]["conv_mode"] == TEMPLATE[family]


def test_vqa_conv_mode_names_a_template(checkpoints, seen, tmp_path, capsys):
    ckpts, root, _ = checkpoints
    q = jsonl(tmp_path / "q.jsonl", [{"question_id": 0, "image": "0.jpg", "text": "Is there a dog?"}])
    argv = ["vqa", "--checkpoint", str(ckpts["minigptv2"]), "--question-file", str(q)]
    argv += ["--answers-file", str(tmp_path / "a.jsonl"), "--image-folder", str(root / "pope" / "val2014")]
    assert main([*argv, "--max-new-tokens", "2", "--conv-mode", "vicuna_v1"]) == 0
    assert prompt_text(ckpts["minigptv2"], seen[0][0][0]).startswith("<s> " + VICUNA_START)
    assert json.loads((tmp_path / "a.run.json").read_text())["protocol"]["conv_mode"] == "vicuna_v1"


@pytest.mark.parametrize("family", sorted(TEMPLATE))
def test_suite_asks_the_helpfulness_questions_in_the_familys_template(checkpoints, family, seen):
    ckpts, root, tmp = checkpoints
    out = tmp / f"suite-{family}"
    kw = dict(limit=1, protocol=Protocol(batch_size=2, dtype="float32"), max_new_tokens=2, log=lambda *_: None)
    summary = run_suite(ckpts[family], root, out, only=["pope"], **kw)
    assert summary["helpfulness/pope"]["protocol"]["conv_mode"] == TEMPLATE[family]
    asked_in(family, ckpts[family], seen[-1][0][0])
