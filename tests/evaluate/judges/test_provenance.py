"""Saved verdict files of the wrong shape (valid JSON, but a list, a string, a missing key) are
refused in one line naming the file (and the entry or line), as files from another judge are."""

import json

import pytest

from vlguard_jax.evaluate.judges import provenance
from vlguard_jax.evaluate.judges.provenance import ProvenanceError

CURRENT = {"judge": "j", "protocol": "p"}
GOOD = {"provenance": CURRENT, "verdicts": {"a": {"verdict": "safe", "conversation": "h"}}}
BAD = {
    "a list": ([GOOD], "a JSON list, not a verdict file"),
    "a string": ("verdicts", "a JSON str, not a verdict file"),
    "no provenance": ({"verdicts": {}}, "no record of the judge"),
    "provenance a list": ({"provenance": [1], "verdicts": {}}, "its provenance is a JSON list, not an object"),
    "no verdicts": ({"provenance": CURRENT}, "no 'verdicts' object, so not this judge's verdict file"),
    "verdicts a list": ({"provenance": CURRENT, "verdicts": []}, "no 'verdicts' object"),
    "an entry a string": ({"provenance": CURRENT, "verdicts": {"a": "safe"}}, "entry 'a': not a verdict"),
    "an entry missing a key": (
        {"provenance": CURRENT, "verdicts": {"a": {"verdict": "safe"}}},
        "entry 'a': not a verdict",
    ),
}


def test_a_good_file_loads(tmp_path):
    (tmp_path / "v.json").write_text(json.dumps(GOOD))
    assert provenance.load(tmp_path / "v.json", CURRENT, "verdicts", ("verdict", "conversation")) == GOOD["verdicts"]


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_file_of_another_shape_is_refused_naming_it(tmp_path, case):
    content, message = BAD[case]
    (tmp_path / "v.json").write_text(json.dumps(content))
    with pytest.raises(ProvenanceError, match="v.json: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        provenance.load(tmp_path / "v.json", CURRENT, "verdicts", ("verdict", "conversation"))


@pytest.mark.parametrize("line", ['{"index": 0}', '"safe"', '{"index": "x", "verdict": "safe"}'])
def test_a_screen_verdict_line_of_another_shape_is_refused_naming_its_line(tmp_path, line, monkeypatch):
    from vlguard_jax.evaluate.judges import screening

    dst = tmp_path / "clean.json"
    monkeypatch.setattr(screening, "outputs", lambda d: {"stem": "clean"})
    (tmp_path / "clean.verdicts.0-of-1.jsonl").write_text(json.dumps({"provenance": CURRENT}) + "\n" + line + "\n")
    with pytest.raises(ProvenanceError, match=r"clean.verdicts.0-of-1.jsonl: line 2"):
        screening.saved_verdicts(dst, CURRENT)
