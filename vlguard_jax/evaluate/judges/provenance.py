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


def load(path, current: dict, field: str) -> dict:
    """The saved entries under `field` of a judge's JSON file ({"provenance", field: {...}}), empty
    when there is none; a file made by another judge, protocol or source is refused (`check`)."""
    saved = read_json(path, None)
    if saved is None:
        return {}
    check(path, saved.get("provenance") if isinstance(saved, dict) else None, current)
    return saved[field]


def check(path, saved: dict | None, current: dict) -> None:
    """Refuse to resume from `path` unless the provenance it recorded (`saved`) equals this run's
    (`current`), naming the first field that differs with both values."""
    if saved is None:
        raise ProvenanceError(
            f"{path}: holds verdicts with no record of the judge, protocol and source they were made from; "
            "remove it to judge again, or choose another destination"
        )
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise ProvenanceError(
                f"{path}: its verdicts were made with {key} {saved.get(key)!r}, this run has {current.get(key)!r}; "
                "remove it to judge again, or choose another destination"
            )
