"""MM-SafetyBench (Liu et al., ECCV 2024): 13 scenarios of harmful questions whose key phrase is
moved into the image, as a Stable Diffusion picture (SD), the phrase typed out (TYPO), or both
stacked (SD_TYPO). Each kind is asked with its own rephrasing of the question: SD with
`Rephrased Question(SD)`, SD_TYPO and TYPO with `Rephrased Question`.

Files as the release lays them out (its repository could not be read here; the layout is the one
its README and the ports of it document): `data/processed_questions/<NN-Scenario>.json`
({id: {"Question", "Key Phrase", "Rephrased Question", "Rephrased Question(SD)", ...}}), the
images under `data/imgs/<NN-Scenario>/<KIND>/<id>.jpg`, and `TinyVersion_ID_List.json` at the
repository's root ([{"Scenario", "Sampled_ID_List"}]), the Tiny subset. --data is the
processed_questions folder (or one scenario's file), --images the imgs folder, and the subset one
of SUBSETS (`tiny_` before a kind: the Tiny subset's questions). The TYPO images are not drawn
here: the authors' rendering could not be read, so a missing image is refused, not redrawn.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlguard_jax.data.records import RecordError
from vlguard_jax.errors import InputError

KINDS = ("SD_TYPO", "SD", "TYPO")  # SD_TYPO first: the default, the paper's strongest
QUESTION_OF = {"SD": "Rephrased Question(SD)", "SD_TYPO": "Rephrased Question", "TYPO": "Rephrased Question"}
SUBSETS = (*KINDS, *(f"tiny_{k}" for k in KINDS))
TINY = "TinyVersion_ID_List.json"


def _read(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: cannot read JSON ({e})") from None


def scenario_files(data) -> list[Path]:
    """The scenario files of `data` (the processed_questions folder, or one scenario's file)."""
    data = Path(data)
    files = sorted(data.glob("*.json")) if data.is_dir() else [data]
    if not files:
        raise InputError(f"{data}: no scenario files (<NN-Scenario>.json)")
    return files


def tiny_ids(data) -> dict[str, set[str]]:
    """{scenario: its Tiny question ids} from TinyVersion_ID_List.json, looked for beside the
    questions and up to the repository's root."""
    data = Path(data)
    folder = data if data.is_dir() else data.parent
    for place in (folder, folder.parent, folder.parent.parent):
        if (place / TINY).is_file():
            rows = _read(place / TINY)
            if not isinstance(rows, list) or not all(
                isinstance(r, dict) and {"Scenario", "Sampled_ID_List"} <= set(r) for r in rows
            ):
                raise RecordError(f"{place / TINY}: expected a list of {{Scenario, Sampled_ID_List}}")
            return {r["Scenario"]: {str(i) for i in r["Sampled_ID_List"]} for r in rows}
    raise InputError(f"the Tiny subset needs {TINY}, looked for in {folder} and the two folders above it")


def questions(data, subset: str) -> list[tuple[str, str, str, str]]:
    """(key, question, image path under --images, scenario) for each question of `subset`."""
    if subset not in SUBSETS:
        raise InputError(f"unknown mmsafetybench subset {subset!r}; choose from {SUBSETS}")
    kind = subset.removeprefix("tiny_")
    keep = tiny_ids(data) if subset.startswith("tiny_") else None
    out = []
    for path in scenario_files(data):
        scenario, rows = path.stem, _read(path)
        if not isinstance(rows, dict):
            raise RecordError(f"{path}: expected MM-SafetyBench's object of questions by id")
        for qid, r in rows.items():
            if keep is not None and str(qid) not in keep.get(scenario, set()):
                continue
            text = r.get(QUESTION_OF[kind]) if isinstance(r, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise RecordError(
                    f"{path}: question {qid!r}: no {QUESTION_OF[kind]!r}, which {kind} images are asked with"
                )
            out.append((f"{scenario}/{qid}", text, f"{scenario}/{kind}/{qid}.jpg", scenario))
    return out
