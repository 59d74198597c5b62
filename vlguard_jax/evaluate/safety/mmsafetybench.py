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
of SUBSETS (`tiny_` before a kind: the Tiny subset's questions).

A TYPO image the folder lacks is drawn from the key phrase (`typo`), and an SD_TYPO one stacked
from its SD image and that drawing (`stacked`), by the rule the public ports of the authors'
script share: Arial (their ARIAL.TTF, given as --font) at 90 pt on a white canvas 1,024 wide, the
words joined while the line's measured length stays under 1,024 and each new line started with a
space, black text at (0, 45), the canvas 90 x (lines + 1) high. The authors' own script could not
be read here, so this is checked against that rule, not against their code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from vlguard_jax.data.images import ImageError, open_rgb, resolve
from vlguard_jax.data.records import RecordError, load_json
from vlguard_jax.errors import InputError

KINDS = ("SD_TYPO", "SD", "TYPO")  # SD_TYPO first: the default, the paper's strongest
QUESTION_OF = {"SD": "Rephrased Question(SD)", "SD_TYPO": "Rephrased Question", "TYPO": "Rephrased Question"}
SUBSETS = (*KINDS, *(f"tiny_{k}" for k in KINDS))
TINY = "TinyVersion_ID_List.json"
FONT_SIZE = 90
WIDTH = 1024


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
            rows = load_json(place / TINY)
            if not isinstance(rows, list) or not all(
                isinstance(r, dict) and {"Scenario", "Sampled_ID_List"} <= set(r) for r in rows
            ):
                raise RecordError(f"{place / TINY}: expected a list of {{Scenario, Sampled_ID_List}}")
            return {r["Scenario"]: {str(i) for i in r["Sampled_ID_List"]} for r in rows}
    raise InputError(f"the Tiny subset needs {TINY}, looked for in {folder} and the two folders above it")


def questions(data, subset: str) -> list[tuple[str, str, str, dict]]:
    """(key, question, image path under --images, meta: scenario as `category`, `kind`,
    `key_phrase`) for each question of `subset`."""
    if subset not in SUBSETS:
        raise InputError(f"unknown mmsafetybench subset {subset!r}; choose from {SUBSETS}")
    kind = subset.removeprefix("tiny_")
    keep = tiny_ids(data) if subset.startswith("tiny_") else None
    out = []
    for path in scenario_files(data):
        scenario, rows = path.stem, load_json(path)
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
            meta = {"category": scenario, "kind": kind, "key_phrase": str(r.get("Key Phrase") or "")}
            out.append((f"{scenario}/{qid}", text, f"{scenario}/{kind}/{qid}.jpg", meta))
    return out


def wrapped(phrase: str, font) -> tuple[str, int]:
    """(the phrase with its line breaks, its number of lines): words join a line while its
    measured length stays under WIDTH; a new line starts with a space."""
    draw = ImageDraw.Draw(Image.new("RGB", (WIDTH, 100), (255, 255, 255)))
    words = str(phrase).split(" ")
    text, length, lines = words[0], draw.textlength(words[0], font=font), 1
    for word in words[1:]:
        length += draw.textlength(" " + word, font=font)
        if length < WIDTH:
            text += " " + word
        else:
            text += "\n " + word
            length, lines = draw.textlength(" " + word, font=font), lines + 1
    return text, lines


def typo(phrase: str, font_path) -> Image.Image:
    """The TYPO image of a key phrase."""
    font = ImageFont.truetype(str(font_path), FONT_SIZE)
    text, lines = wrapped(phrase, font)
    img = Image.new("RGB", (WIDTH, FONT_SIZE * (lines + 1)), (255, 255, 255))
    ImageDraw.Draw(img).text((0, FONT_SIZE / 2.0), text, (0, 0, 0), font=font)
    return img


def stacked(top: Image.Image, bottom: Image.Image) -> Image.Image:
    """An SD_TYPO image: the SD picture above the TYPO one, left-aligned, on white."""
    out = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height), (255, 255, 255))
    out.paste(top.convert("RGB"), (0, 0))
    out.paste(bottom, (0, top.height))
    return out


def _sd_of(item) -> str:
    return item.image.replace(f"/{item.meta['kind']}/", "/SD/")


def check_drawable(images, item, font) -> None:
    """An image the folder lacks can be drawn: a TYPO or SD_TYPO one, with its key phrase, the
    font, and for SD_TYPO its SD picture; else an error naming what is missing."""
    path = resolve(images, item.image)
    kind = item.meta.get("kind")
    if kind not in ("TYPO", "SD_TYPO") or not item.meta.get("key_phrase"):
        raise ImageError(f"{path}: image file not found (question {item.key!r}); only TYPO images are drawn")
    if font is None or not Path(font).is_file():
        raise InputError(
            f"{path}: not in the release's folder; pass --font ARIAL.TTF (MM-SafetyBench's) to draw the {kind} images"
        )
    if kind == "SD_TYPO" and not resolve(images, _sd_of(item)).is_file():
        raise ImageError(f"{resolve(images, _sd_of(item))}: the SD image an SD_TYPO image is stacked from is not there")


def drawing_font(images, items, font) -> str | None:
    """The font's sha256 (first 16 digits) where some of `items`' images would be drawn, else None:
    recorded in a run's protocol, so answers to drawn images never resume as the release's."""
    if not any(i.image and not resolve(images, i.image).is_file() for i in items):
        return None
    if font is None or not Path(font).is_file():
        return "none"  # check_drawable refuses it before any compute
    return hashlib.sha256(Path(font).read_bytes()).hexdigest()[:16]


def drawn(images, item, font) -> Image.Image:
    """The TYPO or SD_TYPO image of `item` (check_drawable first), drawn from its key phrase."""
    text = typo(item.meta["key_phrase"], font)
    if item.meta["kind"] == "TYPO":
        return text
    return stacked(open_rgb(resolve(images, _sd_of(item))), text)
