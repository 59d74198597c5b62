"""The Hub is read-only here: every path a command writes, named as hf://, is refused as its flags
parse, in one line naming the flag and the path, before anything asks the Hub (whose answers
would be network or cache errors). The library's writers refuse it too."""

import pytest

from vlguard_jax.conversion.__main__ import main as convert
from vlguard_jax.data.convert_vlguard import main as convert_vlguard
from vlguard_jax.data.sample import main as sample
from vlguard_jax.data.screen import main as screen
from vlguard_jax.demo.__main__ import main as demo
from vlguard_jax.errors import InputError
from vlguard_jax.evaluate.__main__ import main as evaluate
from vlguard_jax.storage.files import atomic_dir, atomic_write_json, check_output
from vlguard_jax.train.__main__ import main as train

HUB = "hf://datasets/org/outputs/x"
# (command, argv): each writes HUB through its flag
WRITES = {
    "hf-to-flax --dst": (convert, ["hf-to-flax", "--src", "org/m", "--dst", HUB]),
    "flax-to-hf --dst": (convert, ["flax-to-hf", "--src", "ck", "--dst", HUB]),
    "assemble --dst": (convert, ["assemble", "--llm", "a", "--vision-tower", "b", "--projector", "c", "--dst", HUB]),
    "minigptv2 --dst": (convert, ["minigptv2", "--llm", "a", "--vision-tower", "b", "--checkpoint", "c", "--dst", HUB]),
    "flax-to-minigptv2 --dst": (convert, ["flax-to-minigptv2", "--src", "ck", "--dst", HUB]),
    "evaluate --out": (evaluate, ["--checkpoint", "ck", "--benchmark", "xstest", "--data", "x.csv", "--out", HUB]),
    "vqa --answers-file": (
        evaluate,
        ["vqa", "--checkpoint", "ck", "--question-file", "q.jsonl", "--answers-file", HUB],
    ),
    "suite --out": (evaluate, ["suite", "--checkpoint", "ck", "--data-root", "d", "--out", HUB]),
    "report --out": (evaluate, ["report", "--runs", "r", "--out", HUB]),
    "score --upload-file": (evaluate, ["score", "--benchmark", "vizwiz", "--answers", "a.jsonl", "--upload-file", HUB]),
    "score --grades-file": (evaluate, ["score", "--benchmark", "mmvet", "--answers", "a.jsonl", "--grades-file", HUB]),
    "screen --dst": (screen, ["--judge-checkpoint", "g", "--src", "mix.json", "--dst", HUB]),
    "sample --dst": (sample, ["--dst", HUB]),
    "convert_vlguard --dst": (convert_vlguard, ["--src", "train.json", "--dst", HUB]),
}


@pytest.mark.parametrize("name", WRITES)
def test_a_write_to_the_hub_is_refused_as_the_flags_parse(name, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing may be asked; nothing answers
    command, argv = WRITES[name]
    assert command(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    flag = name.split()[-1]
    assert len(err) == 1 and f"argument {flag}: {HUB}: hf:// paths are read-only" in err[0], err


@pytest.mark.parametrize("command", [train, demo])
def test_a_workdir_on_the_hub_is_refused_before_anything_is_written(command, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    argv = ["--config", "demo", f"--config.workdir={HUB}", f"--config.model.checkpoint={tmp_path / 'none'}"]
    assert command(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.workdir" in err[0] and f"{HUB}: hf:// paths are read-only" in err[0], err


def test_the_library_writers_refuse_the_hub():
    for write in (
        lambda: atomic_write_json(HUB, {}),
        lambda: check_output(HUB),
        lambda: atomic_dir(HUB),
    ):
        with pytest.raises(InputError, match=f"{HUB}: hf:// paths are read-only"):
            write()
