"""Record validation: every bad input is an error naming the file and the record."""

import json

import pytest

from vlguard_jax.data.convert_vlguard import main
from vlguard_jax.data.records import RecordError, load_llava, load_vlguard

UNSAFE = {
    "id": "u1",
    "image": "a.png",
    "safe": False,
    "harmful_category": "privacy",
    "harmful_subcategory": "personal data",
    "instr-resp": [{"instruction": "Q", "response": "A"}],
}
SAFE = {
    "id": "s1",
    "image": "b.png",
    "safe": True,
    "instr-resp": [{"safe_instruction": "Q1", "response": "A1"}, {"unsafe_instruction": "Q2", "response": "A2"}],
}


def _write(tmp_path, records, name="meta.json"):
    p = tmp_path / name
    p.write_text(records if isinstance(records, str) else json.dumps(records))
    return p


def test_valid_records_load(tmp_path):
    assert len(load_vlguard(_write(tmp_path, [UNSAFE, SAFE]))) == 2


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(UNSAFE, safe="no"), r"'u1' \(#1\): field 'safe' must be bool"),
        ({k: v for k, v in UNSAFE.items() if k != "image"}, r"'u1' \(#1\): missing field 'image'"),
        (dict(UNSAFE, **{"instr-resp": []}), r"'u1' \(#1\): a unsafe image needs 1 instruction-response pair"),
        (dict(SAFE, **{"instr-resp": SAFE["instr-resp"][:1]}), r"'s1' \(#1\): a safe image needs 2"),
        (
            dict(UNSAFE, **{"instr-resp": [{"instruction": "", "response": "A"}]}),
            r"'u1' \(#1\): instr-resp\[0\] needs a non-empty 'instruction'",
        ),
        (dict(UNSAFE, harmful_category="weather"), r"'u1' \(#1\): harmful_category 'weather' is not one of"),
        (
            dict(SAFE, **{"instr-resp": [{"safe_instruction": "Q", "response": "A"}] * 2}),
            r"'s1' \(#1\): instr-resp keys",
        ),
        ("not a record", r"#1: expected an object"),
    ],
)
def test_bad_vlguard_records(tmp_path, bad, message):
    path = _write(tmp_path, [UNSAFE, bad])
    with pytest.raises(RecordError, match=r"meta\.json: record " + message):
        load_vlguard(path)


def test_malformed_json_names_file_and_position(tmp_path):
    with pytest.raises(RecordError, match=r"meta\.json: invalid JSON at line 2 column"):
        load_vlguard(_write(tmp_path, '[{"id": "x",\n  oops}]'))
    with pytest.raises(RecordError, match=r"meta\.json: expected a JSON list"):
        load_vlguard(_write(tmp_path, '{"id": "x"}'))
    with pytest.raises(RecordError, match=r"missing\.json: cannot read"):
        load_vlguard(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"id": "t", "conversations": []}, r"'t' \(#0\): 'conversations' must be a non-empty list"),
        ({"id": "t", "conversations": [{"from": "bot", "value": "x"}]}, r"'t' \(#0\): conversations\[0\] must be"),
        ({"conversations": [{"from": "human", "value": "x"}]}, r"#0: missing field 'id'"),
    ],
)
def test_bad_llava_records(tmp_path, bad, message):
    with pytest.raises(RecordError, match=r"mix\.json: record " + message):
        load_llava(_write(tmp_path, [bad], "mix.json"))


def test_text_only_llava_record_is_valid(tmp_path):
    rec = {"id": "t", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    assert load_llava(_write(tmp_path, [rec], "mix.json")) == [rec]


def test_convert_cli_reports_bad_record_and_writes_nothing(tmp_path, capsys):
    src = _write(tmp_path, [dict(UNSAFE, safe=None)])
    assert main(["--src", str(src), "--dst", str(tmp_path / "out.json")]) == 1
    assert "record 'u1' (#0): field 'safe' must be bool" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
