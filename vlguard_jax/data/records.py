"""Record schemas: VLGuard metadata (`train.json`, `test.json`) and LLaVA instruction data
(`llava_v1_5_mix665k.json` format). Every error names the file and the record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from vlguard_jax import storage
from vlguard_jax.errors import UserError

VLGUARD_CATEGORIES = ("privacy", "risky behavior", "deception", "discrimination")


class RecordError(UserError, ValueError):
    """A malformed record or file; the message names the file and the record."""


def json_lines(path) -> Iterator[tuple[int, str, dict]]:
    """Each object of a JSON-lines file with its line number and place (`FILE: line N`), blank
    lines skipped; a line that is no JSON object is a RecordError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: cannot read ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordError(f"{where}: invalid JSON ({e.msg})") from None
        if not isinstance(r, dict):
            raise RecordError(f"{where}: a JSON {type(r).__name__}, not an object")
        yield n, where, r


def load_json(path) -> Any:
    """A JSON file's content; a file that cannot be read, or malformed JSON (with its position), is
    a RecordError naming it."""
    path = storage.as_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RecordError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def load_json_list(path) -> list[dict]:
    """A JSON file holding a list of objects; malformed JSON is reported with its position."""
    data = load_json(path)
    if not isinstance(data, list):
        raise RecordError(f"{storage.as_path(path)}: expected a JSON list of records, found {type(data).__name__}")
    return data


def iter_json_list(path, chunk_chars: int = 1 << 24) -> Iterator[Any]:
    """The elements of a JSON file holding a list, one at a time, read in chunks: a 1 GB mix never
    sits in memory whole (as text or as objects). Malformed JSON is reported with its line, as
    `load_json_list` does."""
    path = storage.as_path(path)
    decoder = json.JSONDecoder()
    try:
        f = path.open(encoding="utf-8")
    except OSError as e:
        raise RecordError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        buf, pos, eof = "", 0, False
        lines, column0 = 0, 0  # newlines in the text already dropped; characters since the last one

        def fill():
            nonlocal buf, pos, eof, lines, column0
            more = f.read(chunk_chars)
            eof = not more
            dropped = buf[:pos]
            lines += dropped.count("\n")
            column0 = len(dropped) - dropped.rfind("\n") - 1 if "\n" in dropped else column0 + len(dropped)
            buf, pos = buf[pos:] + more, 0

        def skip_space():
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or eof:
                    return
                fill()

        def fail(msg, at) -> NoReturn:
            line = lines + buf.count("\n", 0, at) + 1
            newline = buf.rfind("\n", 0, at)
            column = at - newline if newline >= 0 else column0 + at + 1
            raise RecordError(f"{path}: invalid JSON at line {line} column {column}: {msg}")

        fill()
        skip_space()
        if pos >= len(buf):
            fail("the file is empty", pos)
        if buf[pos] != "[":
            try:
                found = type(json.loads(buf[pos:] + f.read())).__name__
            except json.JSONDecodeError as e:
                fail(e.msg, pos)
            raise RecordError(f"{path}: expected a JSON list of records, found {found}")
        pos += 1
        first = True
        while True:
            skip_space()
            if pos >= len(buf):
                fail("the list is not closed", pos)
            if buf[pos] == "]":
                pos += 1
                skip_space()
                if pos < len(buf):
                    fail("extra data after the list", pos)
                return
            if not first:
                if buf[pos] != ",":
                    fail("expected ',' between records", pos)
                pos += 1
                skip_space()
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as e:
                    if eof:
                        fail(e.msg, e.pos)
                    fill()
                    continue
                if end == len(buf) and not eof:  # a number or literal may go on in the next chunk
                    fill()
                    continue
                break
            yield value
            pos, first = end, False


def record_label(source, index: int, record: Any) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return f"{source}: record {rid!r} (#{index})" if rid is not None else f"{source}: record #{index}"


def _text(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def validate_vlguard(record: Any, source="<records>", index: int = 0) -> dict:
    """Check one VLGuard record; returns it unchanged or raises RecordError."""
    where = record_label(source, index, record)
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected an object, found {type(record).__name__}")
    for key, kind in (("id", str), ("image", str), ("safe", bool), ("instr-resp", list)):
        if key not in record:
            raise RecordError(f"{where}: missing field {key!r}")
        if not isinstance(record[key], kind):
            raise RecordError(f"{where}: field {key!r} must be {kind.__name__}, found {type(record[key]).__name__}")
    if not record["id"] or not record["image"]:
        raise RecordError(f"{where}: empty 'id' or 'image'")
    pairs = record["instr-resp"]
    expected = ("safe_instruction", "unsafe_instruction") if record["safe"] else ("instruction",)
    if len(pairs) != len(expected):
        kind = "safe" if record["safe"] else "unsafe"
        raise RecordError(
            f"{where}: a {kind} image needs {len(expected)} instruction-response pair(s), found {len(pairs)}"
        )
    found = []
    for j, pair in enumerate(pairs):
        if not isinstance(pair, dict) or len(pair) != 2 or "response" not in pair:
            raise RecordError(f"{where}: instr-resp[{j}] must hold one instruction and a 'response'")
        key = next(k for k in pair if k != "response")
        # The released test.json has empty responses (evaluation needs only the instruction).
        if not _text(pair[key]) or not isinstance(pair["response"], str):
            raise RecordError(f"{where}: instr-resp[{j}] needs a non-empty {key!r} and a string 'response'")
        found.append(key)
    if sorted(found) != sorted(expected):
        raise RecordError(f"{where}: instr-resp keys {found}, expected {list(expected)}")
    if not record["safe"]:
        cat = record.get("harmful_category")
        if cat not in VLGUARD_CATEGORIES:
            raise RecordError(f"{where}: harmful_category {cat!r} is not one of {list(VLGUARD_CATEGORIES)}")
        if not _text(record.get("harmful_subcategory")):
            raise RecordError(f"{where}: unsafe record without a harmful_subcategory")
    return record


def validate_llava(record: Any, source="<records>", index: int = 0) -> dict:
    """Check one LLaVA conversation record (`id`, optional `image`, `conversations`)."""
    where = record_label(source, index, record)
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected an object, found {type(record).__name__}")
    if "id" not in record:
        raise RecordError(f"{where}: missing field 'id'")
    if "image" in record and not (isinstance(record["image"], str) and record["image"]):
        raise RecordError(f"{where}: field 'image' must be a non-empty string")
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise RecordError(f"{where}: 'conversations' must be a non-empty list")
    for j, turn in enumerate(conv):
        if (
            not isinstance(turn, dict)
            or turn.get("from") not in ("human", "gpt")
            or not isinstance(turn.get("value"), str)
        ):
            raise RecordError(f"{where}: conversations[{j}] must be {{'from': 'human'|'gpt', 'value': str}}")
    return record  # `<image>` tags that do not match the image: see conversation.image_tags


def load_vlguard(path) -> list[dict]:
    records = load_json_list(path)
    return [validate_vlguard(r, path, i) for i, r in enumerate(records)]


def load_llava(path) -> list[dict]:
    records = load_json_list(path)
    return [validate_llava(r, path, i) for i, r in enumerate(records)]
