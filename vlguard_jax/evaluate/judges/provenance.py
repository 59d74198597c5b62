"""What saved verdicts were judged from, so that a resumed run never reuses a verdict for other
input: the files a judge appends to or rewrites (the screen's verdict files, `evaluate`'s
`*.llamaguard.json` and `*.judge.json`) record the judge, the prompt protocol and the source they
judged, and each verdict the hash of the content it judged."""

from __future__ import annotations

import hashlib
import json

from vlguard_jax.errors import UserError
from vlguard_jax.storage.files import read_json


class ProvenanceError(UserError):
    """Saved verdicts made from other input, by another judge or under another protocol."""


def digest(content) -> str:
    """A short hash of JSON-able content (a conversation, a judged pair), stable across runs."""
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


AGAIN = "remove it to judge again, or choose another destination"


def load(path, current: dict, field: str, needs: tuple[str, ...] = ()) -> dict:
    """The saved entries under `field` of a judge's JSON file ({"provenance", field: {...}}), empty
    when there is none; a file made by another judge, protocol or source is refused (`check`), and
    so is one of another shape: each entry an object with the keys `needs` names."""
    saved = read_json(path, None)
    if saved is None:
        return {}
    if not isinstance(saved, dict):
        raise ProvenanceError(f"{path}: a JSON {type(saved).__name__}, not a verdict file (an object); {AGAIN}")
    check(path, saved.get("provenance"), current)
    entries = saved.get(field)
    if not isinstance(entries, dict):
        raise ProvenanceError(f"{path}: no {field!r} object, so not this judge's verdict file; {AGAIN}")
    for key, entry in entries.items():
        entry_fits(f"{path}: entry {key!r}", entry, needs)
    return entries


def verdicts(path, field: str = "verdicts") -> dict:
    """{key: its saved verdict} from a verdict file this run has written (each entry's `verdict`)."""
    return {k: v["verdict"] for k, v in (read_json(path, {}) or {}).get(field, {}).items()}


def entry_fits(where: str, entry, needs: tuple[str, ...]) -> None:
    """One saved verdict (at `where`: the file and entry) is an object with the keys `needs`
    names, or the file is refused."""
    if not isinstance(entry, dict) or any(k not in entry for k in needs):
        raise ProvenanceError(f"{where}: not a verdict (an object with {', '.join(needs)}); {AGAIN}")


def check(path, saved, current: dict) -> None:
    """Refuse to resume from `path` unless the provenance it recorded (`saved`) equals this run's
    (`current`), naming the first field that differs with both values."""
    if saved is None:
        raise ProvenanceError(
            f"{path}: holds verdicts with no record of the judge, protocol and source they were made from; {AGAIN}"
        )
    if not isinstance(saved, dict):
        raise ProvenanceError(f"{path}: its provenance is a JSON {type(saved).__name__}, not an object; {AGAIN}")
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise ProvenanceError(
                f"{path}: its verdicts were made with {key} {saved.get(key)!r}, this run has {current.get(key)!r}; "
                + AGAIN
            )
