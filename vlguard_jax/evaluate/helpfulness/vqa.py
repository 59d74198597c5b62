"""LLaVA-1.5's helpfulness benchmarks, the answering side: LLaVA's question files in, LLaVA's answers
format out, line for line, so that LLaVA's scorers run on our answers and ours on theirs.

Question files, and the LLaVA script whose prompt each reproduces:
- `.jsonl` ({question_id, image, text}): `model_vqa_loader.py` (GQA, POPE, MME, TextVQA, VizWiz;
  128 new tokens) and `model_vqa.py` (MM-Vet, LLaVA-Bench; 1024): the prompt is `<image>\\n` + text.
- `.json` (ScienceQA's `llava_test_CQM-A.json`): `model_vqa_science.py` (1024): the first turn
  without its tag, the tag put first when the question has an image (text-only questions have none).
- `.tsv` (MMBench, base64 images): `model_vqa_mmbench.py` (1024): the hint, the question and the
  options as `A. ...`; with `all_rounds`, asked once per rotation of the options, as LLaVA's
  `--all-rounds` (MMBench's own TSVs also hold the rotations as rows: the scorer takes both).
`single_pred_prompt` appends "Answer with the option's letter from the given choices directly."
Decoding is greedy; pixels are padded to a square as LLaVA-1.5's `process_images` does for its
`image_aspect_ratio=pad` (the VLGuard safety evaluation does not pad: see runner.py).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import sys
import time
import uuid
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from vlguard_jax import sharding, storage
from vlguard_jax.checkpoints.ref import resolve_checkpoint
from vlguard_jax.data.conversation import IMAGE_TAG
from vlguard_jax.data.images import ImageError, ImageInput
from vlguard_jax.data.records import RecordError
from vlguard_jax.errors import InputError, MissingFileError, UsageError
from vlguard_jax.evaluate import shares
from vlguard_jax.evaluate.runner import claim_output
from vlguard_jax.evaluate.shares import Share
from vlguard_jax.families import check_template, family_of, image_templates
from vlguard_jax.generate import Sampling, auto_dtype, load_generator, response_text, weight_bytes
from vlguard_jax.generate.prompts import prompt_ids, prompt_ids_of_text
from vlguard_jax.storage.files import append_jsonl, atomic_write_text, read_jsonl, resume_jsonl, sha256_file

SINGLE_PRED = "Answer with the option's letter from the given choices directly."
OPTIONS = ("A", "B", "C", "D")
MAX_NEW_TOKENS = {".jsonl": 128, ".json": 1024, ".tsv": 1024}  # the scripts' settings, per question file


@dataclasses.dataclass(frozen=True)
class Question:
    qid: object  # question_id as the file gives it (int or str)
    text: str  # the user turn, the image tag included where the script puts one
    prompt: str  # what the answers file records as `prompt` (the script's cur_prompt)
    image: str | None = None  # path under the image folder
    image_b64: str | None = None
    extra: tuple = ()  # (key, value) pairs the answer line carries (MMBench's round and options)

    @property
    def key(self) -> tuple:
        return (self.qid, dict(self.extra).get("round_id"))


def _jsonl(path: Path) -> list[Question]:
    out = []
    for n, q in enumerate(read_jsonl(path), 1):
        if not isinstance(q, dict) or not {"question_id", "image", "text"} <= set(q):
            raise RecordError(f"{path}: question {n}: expected question_id, image and text")
        out.append(Question(q["question_id"], IMAGE_TAG + "\n" + q["text"], q["text"], image=q["image"]))
    return out


def _science(path: Path, single_pred: bool) -> list[Question]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}") from None
    out = []
    for i, r in enumerate(rows):
        try:
            qs = r["conversations"][0]["value"].replace(IMAGE_TAG, "").strip()
            qid = r["id"]
        except (KeyError, IndexError, TypeError, AttributeError):
            raise RecordError(f"{path}: record #{i}: expected id and conversations[0].value") from None
        text, prompt = qs, qs
        if r.get("image"):
            text, prompt = IMAGE_TAG + "\n" + qs, IMAGE_TAG + "\n" + qs
        if single_pred:
            text, prompt = text + "\n" + SINGLE_PRED, prompt + "\n" + SINGLE_PRED
        out.append(Question(qid, text, prompt, image=r.get("image") or None))
    return out


def _missing(value) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "nan", "none"))


def _mmbench(path: Path, single_pred: bool, all_rounds: bool) -> list[Question]:
    csv.field_size_limit(sys.maxsize)  # base64 images
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = []
    for n, row in enumerate(rows, 2):
        missing = [c for c in ("index", "question", "image") if c not in row]
        if missing:
            raise RecordError(f"{path}: row {n}: missing column(s) {missing}")
        options = []
        for letter in OPTIONS:
            if _missing(row.get(letter)):
                break
            options.append(row[letter])
        chars = list(OPTIONS[: len(options)])
        index = int(row["index"])
        for round_id in range(len(options) if all_rounds else 1):
            question = row["question"]
            if not _missing(row.get("hint")):
                question = row["hint"] + "\n" + question
            for char, option in zip(OPTIONS, options):
                question += "\n" + char + ". " + option
            text = IMAGE_TAG + "\n" + question + ("\n" + SINGLE_PRED if single_pred else "")
            out.append(
                Question(
                    index,
                    text,
                    question,
                    image_b64=row["image"],
                    extra=(("round_id", round_id), ("options", list(options)), ("option_char", list(chars))),
                )
            )
            options, chars = options[1:] + options[:1], chars[1:] + chars[:1]
    return out


def read_questions(path, single_pred: bool = False, all_rounds: bool = False) -> list[Question]:
    """The questions of a file, each once: a question id given twice is an error naming it (its
    answers could not be told apart)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such question file")
    if path.suffix == ".jsonl":
        questions = _jsonl(path)
    elif path.suffix == ".json":
        questions = _science(path, single_pred)
    elif path.suffix == ".tsv":
        questions = _mmbench(path, single_pred, all_rounds)
    else:
        raise InputError(f"{path}: a question file is .jsonl (LLaVA's), .json (ScienceQA) or .tsv (MMBench)")
    seen = set()
    for q in questions:
        if q.key in seen:
            raise RecordError(f"{path}: question_id {q.qid!r} appears more than once")
        seen.add(q.key)
    return questions


def question_pixels(q: Question, image_folder, image: ImageInput) -> np.ndarray | None:
    """The pixels of a question's image as the model takes it (padded, as LLaVA-1.5's scripts do
    where the family's transform pads), or None."""
    if q.image_b64 is not None:
        try:
            img = Image.open(io.BytesIO(base64.b64decode(q.image_b64))).convert("RGB")
        except (ValueError, UnidentifiedImageError, OSError) as e:
            raise ImageError(f"question {q.qid}: cannot decode its base64 image ({e})") from None
        return image.pixels(img, pad=True, name=f"question {q.qid}")
    if q.image is None:
        return None
    if image_folder is None:
        raise InputError("--image-folder is needed: the questions name image files")
    return image.load(image_folder, q.image, pad=True)


def answer_line(q: Question, text: str, model_id: str) -> dict:
    extra = dict(q.extra)
    head = {"question_id": q.qid}
    if "round_id" in extra:
        head["round_id"] = extra.pop("round_id")
    return {
        **head,
        "prompt": q.prompt,
        "text": text,
        **extra,
        "answer_id": uuid.uuid4().hex[:22],
        "model_id": model_id,
        "metadata": {},
    }


def conv_template(conv_mode: str, ref) -> str:
    """`--conv-mode`'s template: `auto` is the checkpoint family's (LLaVA's scripts' `vicuna_v1`,
    MiniGPT-v2's own); a template the family cannot embed images in is refused."""
    modes = ("auto", *image_templates())
    check_template(conv_mode, "--conv-mode", modes)
    template = ref.family.question_template(ref.tokenizer) if conv_mode == "auto" else conv_mode
    if template not in modes:
        raise InputError(f"{ref.name}: a {ref.family.label} checkpoint has no image template for --conv-mode auto")
    return template


def question_ids(loaded, q: Question, template: str, image_tokens: int | None = None) -> list[int]:
    """A question's prompt ids in `template`, its image taking `image_tokens`: LLaVA's conversation
    templates render the turn as its scripts do (the tag where the script puts it); others through
    the family's prompt rule."""
    text = family_of(loaded.config).turn_text(template, q.text)
    if text is not None:
        return prompt_ids_of_text(loaded.tokenizer, loaded.config, text, image_tokens)
    return prompt_ids(loaded.tokenizer, loaded.config, q.text, IMAGE_TAG in q.text, template, image_tokens)


def answer(
    gen,
    loaded,
    questions: list[Question],
    answers_file,
    *,
    conv_mode: str,  # a template name (conv_template resolves `auto`)
    image_folder=None,
    max_new_tokens: int = 128,
    model_id: str = "model",
    log=print,
    order: list[Question] | None = None,
) -> list[dict]:
    """Answer every question the answers file lacks, a batch at a time (appended as it goes), then
    leave the file in question order. Returns the lines of `questions`. `order` (default:
    `questions`) is the whole question file: answers to its questions beyond `questions` (an
    earlier run's, with a larger limit) are kept; an answer to a question it lacks is an error."""
    path = Path(answers_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    share = Share.current()  # several processes: each answers its slice into its part
    done = shares.saved(path, _answers)
    order = questions if order is None else order
    known = {q.key for q in order}
    stray = [k for k in done if k not in known]
    if stray:
        raise InputError(
            f"{path}: holds {len(stray)} answers to questions not in the question file "
            f"(e.g. question_id {stray[0][0]!r}); answer into another --answers-file"
        )
    absent = sum(q.key not in done for q in questions)
    if done:
        log(f"{path}: {len(questions) - absent} answers already there, {absent} to go")
    todo = [q for q in share.of(questions) if q.key not in done]
    resume_jsonl(share.part(path))  # its own part's torn line, cut before appending
    image = family_of(loaded.config).image_input(loaded.config)
    assert image is not None  # answer_question_file refuses a family that takes no image
    sampling = Sampling(max_new_tokens=max_new_tokens)
    bar = tqdm(total=len(todo), desc="answering", unit="question", dynamic_ncols=True)
    t0, n_tokens = time.perf_counter(), 0
    for batch in gen.batches(len(todo)):
        chunk = [todo[k] for k in batch]
        pix = [question_pixels(q, image_folder, image) for q in chunk]
        ids = [question_ids(loaded, q, conv_mode, None if x is None else image.count(x)) for q, x in zip(chunk, pix)]
        out = gen(ids, pix, sampling)
        lines = [answer_line(q, response_text(loaded.tokenizer, toks), model_id) for q, toks in zip(chunk, out)]
        append_jsonl(share.part(path), lines)
        n_tokens += sum(map(len, out))
        bar.update(len(chunk))
        bar.set_postfix(tok_s=f"{n_tokens / max(time.perf_counter() - t0, 1e-9):.1f}")
    bar.close()
    done = shares.merge(share, path, [q.key for q in order], _answers, _write_answers)
    return [done[q.key] for q in questions]


def _answers(path) -> dict:
    """An answers file's complete lines by question; never written to, as another process may be
    appending to it (a line torn by an interruption is cut where its writer resumes)."""
    rows = read_jsonl(path, complete=True) if Path(path).exists() else []
    return {(a["question_id"], a.get("round_id")): a for a in rows}


def _write_answers(path, answers: dict) -> None:
    atomic_write_text(path, "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers.values()))


def answer_question_file(
    checkpoint: str,
    question_file: str,
    answers_file: str,
    *,
    image_folder: str | None = None,
    conv_mode: str = "auto",
    single_pred_prompt: bool = False,
    all_rounds: bool = False,
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    dtype: str = "auto",
    limit: int | None = None,
    mesh: str | None = None,
    log=print,
) -> list[dict]:
    """`evaluate vqa`: a checkpoint answers a LLaVA question file into `answers_file` (LLaVA's
    format), resumable; the file records what answered (checkpoint fingerprint, protocol, the
    question file's hash), and a run with other settings is refused. `max_new_tokens` defaults to
    the LLaVA script's for the question file (MAX_NEW_TOKENS)."""
    path = storage.local_only(answers_file, "--answers-file")
    if path.resolve() == Path(question_file).resolve():
        raise UsageError(f"--answers-file {path}: the question file itself; answer into another file")
    every = read_questions(question_file, single_pred_prompt, all_rounds)
    ref = resolve_checkpoint(checkpoint)
    if not ref.family.takes_images:
        raise InputError(f"{checkpoint}: a text-only LLM; the helpfulness benchmarks ask about images")
    conv_mode = conv_template(conv_mode, ref)
    max_new = max_new_tokens or MAX_NEW_TOKENS[Path(question_file).suffix]
    dtype = auto_dtype() if dtype == "auto" else dtype
    settings = {
        "conv_mode": conv_mode,
        "max_new_tokens": max_new,
        "single_pred_prompt": single_pred_prompt,
        "dtype": dtype,
        "pad": True,
    }
    devices = sharding.eval_mesh(mesh, lambda: weight_bytes(ref, dtype))
    claim_output(
        None,
        path,
        {
            "checkpoint": checkpoint,
            "fingerprint": ref.fingerprint,
            "protocol": settings,
            "seed": 0,
            "questions": {"file": str(Path(question_file).resolve()), "sha256": sha256_file(question_file)},
            "mesh": sharding.mesh_record(devices),  # a record, not compared on resume
        },
        log,
    )
    gen, loaded = load_generator(ref, batch_size=batch_size, dtype=jnp.dtype(dtype), mesh=devices)
    return answer(
        gen,
        loaded,
        every[:limit],
        path,
        image_folder=image_folder,
        conv_mode=conv_mode,
        max_new_tokens=max_new,
        model_id=Path(checkpoint).name,
        log=log,
        order=every,
    )
