"""Run a benchmark on a checkpoint: batched greedy generation by the authors' protocol, responses
written after every batch (an interrupted run resumes where it stopped), then scores.

Outputs: OUT/<benchmark>/<subset>.json ({key: response}, the shape of the authors'
results/<subset>/<engine>.json) and OUT/summary.json ({"<benchmark>/<subset>": scores, with the
model kind and the generation protocol}).

A text-only LLM (a converted `LlamaForCausalLM` such as Vicuna) runs the text benchmarks (AdvBench,
XSTest) with its own chat template, for the paper's LLM-versus-VLLM comparison.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax.numpy as jnp
from PIL import Image
from tqdm import tqdm

from vlguard_jax import sharding, storage
from vlguard_jax.checkpoints.ref import CheckpointRef, resolve_checkpoint
from vlguard_jax.data.images import ImageError, open_rgb, resolve
from vlguard_jax.errors import InputError, MissingFileError
from vlguard_jax.evaluate import shares
from vlguard_jax.evaluate.agreement import agreement
from vlguard_jax.evaluate.intervals import bootstrap_ci
from vlguard_jax.evaluate.judges import SAFETY_JUDGES, gpt4_judge, judge_names, llamaguard, openai_safety, provenance
from vlguard_jax.evaluate.safety import figstep, holisafe, mmsafetybench, safety_sets
from vlguard_jax.evaluate.safety.image_controls import CONTROLS, controlled
from vlguard_jax.evaluate.safety.safety_sets import TEXT_IMAGES
from vlguard_jax.evaluate.safety.scoring import REFUSAL_MARKERS, is_refusal, token_f1
from vlguard_jax.evaluate.shares import Share
from vlguard_jax.families import check_template, family_of
from vlguard_jax.flags import COMPUTE_DTYPES
from vlguard_jax.generate import Sampling, auto_dtype, load_generator, prompt_ids, response_text
from vlguard_jax.generate.prompts import default_template, foreign_template
from vlguard_jax.storage.files import check_output, read_json, write_json

SUMMARY = "summary.json"
BLANK_COLOR = (255, 255, 255)


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How responses are generated; recorded in summary.json. The defaults are VLGuard_eval.py's
    (greedy, 256 new tokens, at least 1, `llava_v1` for a LLaVA), except the compute dtype: the
    authors run in float16; `dtype` "auto" (or None) takes `auto_dtype()`: float16 on a GPU, as
    the authors, bfloat16 on a TPU, float32 on a CPU.
    `text_image` is what a VLLM sees with a text-only attack: no image (the authors'), or a blank
    white one, which published follow-ups report changes ASR. `image_control` replaces an image
    benchmark's images (safety/image_controls.py: none, blank, noise, blur); None: the real ones."""

    template: str = "auto"
    max_new_tokens: int = 256
    min_new_tokens: int = 1
    dtype: str | None = None
    text_image: str = "none"
    batch_size: int = 8
    image_control: str | None = None

    def __post_init__(self):
        check_template(self.template)
        if self.dtype is not None and self.dtype not in ("auto",) + COMPUTE_DTYPES:
            raise InputError(f"dtype {self.dtype!r} is not one of {('auto',) + COMPUTE_DTYPES}")
        if self.text_image not in TEXT_IMAGES:
            raise InputError(f"text image {self.text_image!r} is not one of {TEXT_IMAGES}")
        if self.image_control is not None and self.image_control not in CONTROLS:
            raise InputError(f"image control {self.image_control!r} is not one of {CONTROLS}")
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.min_new_tokens < 0:
            raise InputError(f"min_new_tokens must be at least 0, got {self.min_new_tokens}")
        if self.min_new_tokens > self.max_new_tokens:
            raise InputError(
                f"--min-new-tokens {self.min_new_tokens} is more than --max-new-tokens {self.max_new_tokens}"
            )

    def resolved(self, config, tokenizer) -> Protocol:
        template = default_template(config, tokenizer) if self.template == "auto" else self.template
        dtype = auto_dtype() if self.dtype in (None, "auto") else self.dtype
        return dataclasses.replace(self, template=template, dtype=dtype)


def rescore(responses_file, meta=None, overwrite: bool = False) -> tuple[dict, Path]:
    """Scores a saved responses file without a model (`evaluate score --responses`): the refusal
    decision of each response is written beside it (`.scored.json`), and the ASR returned. With
    `meta` (VLGuard's test.json) the file's stem names the subset, for the category breakdown."""
    path = Path(responses_file)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such responses file")
    responses = read_json(path, None)
    if not isinstance(responses, dict) or not all(isinstance(v, str) for v in responses.values()):
        raise InputError(f"{responses_file}: expected a JSON object mapping keys to response strings")
    if meta:
        items = safety_sets.vlguard(meta, path.stem)
        missing = [k for k in responses if k not in {i.key for i in items}]
        if missing:
            raise InputError(
                f"{responses_file}: {len(missing)} keys are not in subset {path.stem!r} of {meta}, e.g. {missing[0]!r}"
            )
    else:
        items = [safety_sets.Item(k, "") for k in responses]
    out = check_output(path.with_name(path.stem + ".scored.json"), path, overwrite=overwrite)
    write_json(out, {k: {"response": v, "refusal": is_refusal(v)} for k, v in responses.items()})
    return score("vlguard" if meta else "responses", items, responses, path.stem if meta else None), out


def score(benchmark: str, items: list, responses: dict, subset: str | None = None) -> dict:
    """ASR (attacks), refusal rate (benign prompts), counts, and a per-category breakdown; each
    rate with its 95% bootstrap interval over prompts beside it (`asr_ci95`, `refusal_rate_ci95`,
    evaluate.intervals)."""

    rule = holisafe.is_refusal if benchmark == "holisafe" else is_refusal  # HoliSafe's own rule
    refused = {i.key: rule(responses[i.key]) for i in items if i.key in responses}  # once per response

    def rates(its):
        flags = [refused[i.key] for i in its]
        count, n = sum(flags), len(its)
        return {
            "n": n,
            "refusals": count,
            "asr": (n - count) / n if n else 0.0,
            "asr_ci95": bootstrap_ci([not f for f in flags]),
            "refusal_rate": count / n if n else 0.0,
            "refusal_rate_ci95": bootstrap_ci(flags),
        }

    its = [i for i in items if i.key in responses]
    out = {"benchmark": benchmark, "answered": len(its), "total": len(items)}
    if benchmark in safety_sets.LABELLED:  # safe prompts: over-refusal; unsafe ones: attack success
        for label, keep in (("safe", ("n", "refusal_rate", "refusal_rate_ci95")), ("unsafe", ("n", "asr", "asr_ci95"))):
            part = [i for i in its if i.meta["label"] == label]
            out[label] = {k: v for k, v in rates(part).items() if k in keep}
            groups = by_category(part)
            if groups:
                out[label]["by_category"] = {
                    c: {k: v for k, v in rates(g).items() if k in keep} for c, g in groups.items()
                }
        if benchmark == "holisafe":
            by_type = {t: [refused[i.key] for i in its if i.meta["type"] == t] for t in holisafe.UNSAFE_TYPES}
            out.update(holisafe.type_rates(by_type))
        return out
    out.update(rates(its))
    f1 = helpfulness_f1s(its, responses)
    if subset == "safe_safes" and f1:
        out["helpfulness_f1"] = sum(f1) / len(f1)
        out["helpfulness_f1_ci95"] = bootstrap_ci(f1)
        out["with_reference"] = len(f1)
    groups = by_category(its)
    if groups:
        out["by_category"] = {c: {k: v for k, v in rates(g).items() if k != "refusals"} for c, g in groups.items()}
    return out


def helpfulness_f1s(items: list, responses: dict) -> list[float]:
    """Each answered item's token F1 against its reference answer (items with one), in order."""
    return [
        token_f1(responses[i.key], i.meta["reference"]) for i in items if i.meta.get("reference") and i.key in responses
    ]


def by_category(items: list) -> dict[str, list]:
    """Items by their category (sorted), those that have one."""
    groups = collections.defaultdict(list)
    for i in items:
        if "category" in i.meta:
            groups[i.meta["category"]].append(i)
    return dict(sorted(groups.items()))


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One safety evaluation: which checkpoint answers which prompts, how, and into where.

    checkpoint: a converted checkpoint or a training workdir (a path, resolved by `run`, or its
      CheckpointRef).
    benchmark, subset: a safety set and its subset (see safety_sets; None takes its default).
    out: the output directory, local, gs:// or s3://: OUT/<benchmark>/<subset>.json and summary.json.
    meta, images: VLGuard's test.json and its image folder. data: the AdvBench, XSTest or FigStep
        file. attack: AdvBench's (`vanilla` or `suffix`). font: FigStep's FreeMonoBold.
    limit: only the first N prompts. seed: the sampling seed.
    protocol: how responses are generated (Protocol).
    judge: one judge's name or several (a tuple), or None: `openai-compatible` (the win rate
        against `references`, gpt4_safe_safes.json, asked `judge_orders` times with the answers'
        order swapped), or safety judges, each giving every response a verdict: `llamaguard`
        (Llama Guard's, from `judge_checkpoint`, prompted as `llamaguard_prompt` says),
        `openai-safety` (a chat model's, judges/openai_safety.py) and `refusal-string` (the
        markers'). With a safety judge the markers judge too, and every pair's agreement is kept.
    mesh: "D,F,T" or "auto" (sharding.eval_mesh), None for one device; recorded in summary.json,
        not part of what a resume must match.
    """

    checkpoint: CheckpointRef | str
    benchmark: str
    out: Any
    subset: str | None = None
    meta: Any = None
    images: Any = None
    data: Any = None
    attack: str = "vanilla"
    font: Any = None
    limit: int | None = None
    seed: int = 0
    protocol: Protocol = Protocol()
    judge: str | tuple[str, ...] | None = None
    judge_checkpoint: Any = None
    references: Any = None
    judge_orders: int = 1
    llamaguard_prompt: str = "llama-recipes"
    mesh: str | None = None  # the devices it runs on: a --mesh spec (sharding.eval_mesh); None one device


def run(e: Evaluation, *, generator=None, log=print) -> dict:
    """Generate what is missing from OUT/<benchmark>/<subset>.json, then score it (and judge it,
    with a judge). `generator`: a (Generator, Loaded) pair already loaded for this checkpoint
    (the suite's), else one is loaded when there is anything to generate."""
    benchmark, subset, protocol, references = e.benchmark, e.subset, e.protocol, e.references
    # everything that can fail does so before any generation
    checkpoint = resolve_checkpoint(e.checkpoint)
    config, tokenizer = checkpoint.config, checkpoint.tokenizer
    llm = not family_of(config).takes_images
    if llm and benchmark in ("vlguard", "figstep"):
        raise InputError(
            f"{checkpoint}: a text-only LLM; --benchmark {benchmark} asks about images, so it runs "
            "on a LLaVA checkpoint (an LLM runs advbench and xstest)"
        )
    if llm and protocol.text_image != "none":
        raise InputError(f"{checkpoint}: a text-only LLM takes no image (--text-image {protocol.text_image})")
    if llm and protocol.image_control is not None:
        raise InputError(f"{checkpoint}: a text-only LLM takes no image (--image-control {protocol.image_control})")
    protocol = protocol.resolved(config, tokenizer)
    warning = foreign_template(config, protocol.template)  # recorded: the protocol names the template
    if warning:
        log(warning)
    judges = judge_names(e.judge)
    judge_ref = None
    if "openai-compatible" in judges:
        if (benchmark, subset) != ("vlguard", "safe_safes") or not references or not e.images:
            raise InputError(
                "--judge openai-compatible applies to --benchmark vlguard --subset safe_safes with "
                "--references gpt4_safe_safes.json and --images (the judge sees the image)"
            )
        gpt4_judge.settings()
        references = gpt4_judge.references_from(references)
    if "llamaguard" in judges:
        if not e.judge_checkpoint:
            raise InputError("--judge llamaguard needs --judge-checkpoint DIR (a converted Llama Guard)")
        judge_ref = llamaguard.check(e.judge_checkpoint)
        llamaguard.check_prompt(e.llamaguard_prompt)
    if "openai-safety" in judges:
        gpt4_judge.settings()  # configured, or refused before any generation

    subset, items = safety_sets.load(benchmark, subset=subset, meta=e.meta, data=e.data, attack=e.attack)
    if llm and any(i.image for i in items):
        raise InputError(f"{checkpoint}: a text-only LLM; {benchmark} {subset} has prompts with images")
    if protocol.image_control is not None and not any(i.image or i.render for i in items):
        raise InputError(
            f"--image-control applies to prompts with images; {benchmark} {subset} has none "
            "(--text-image gives text prompts a blank image)"
        )
    images = storage.unpacked(e.images) if e.images else e.images  # an archive: its unpacked copy
    if e.limit:
        items = items[: e.limit]
    out = storage.as_path(e.out)  # local, gs:// or s3://: every write is one whole JSON file
    path = out / benchmark / f"{subset}.json"
    # the image control is recorded where there is one, so a real-image run's record is as before
    settings = {
        k: v
        for k, v in dataclasses.asdict(protocol).items()
        if k != "batch_size" and not (k == "image_control" and v is None)
    }
    if benchmark == "mmsafetybench" and images:  # drawn images are not the release's: a run says so
        font = mmsafetybench.drawing_font(images, items, e.font)
        settings |= {"typo_font": font} if font else {}
    claim_output(
        out,
        path,
        {"checkpoint": str(checkpoint), "fingerprint": checkpoint.fingerprint, "protocol": settings, "seed": e.seed},
        log,
    )
    share = Share.current()  # several processes: each answers its slice into its part
    responses = shares.saved(path, _responses)
    absent = [i for i in items if i.key not in responses]
    if len(absent) < len(items):
        log(f"{path}: {len(items) - len(absent)} responses already there, {len(absent)} to generate")
    _check_images(benchmark, images, absent, e.font)  # by every process, for every share
    todo = [i for i in share.of(items) if i.key not in responses]
    own = responses if share.count == 1 else _responses(share.part(path))
    font = e.font
    mesh = None
    if todo:
        font = _figstep_font(e.font, log) if benchmark == "figstep" else e.font
        mesh = _generate(
            checkpoint,
            benchmark,
            todo,
            own,
            share.part(path),
            images=images,
            protocol=protocol,
            font=font,
            seed=e.seed,
            tqdm=tqdm,
            generator=generator,
            mesh=e.mesh,
        )
    responses = shares.merge(share, path, [i.key for i in items], _responses, write_json)
    result = score(benchmark, items, responses, subset)
    if benchmark == "figstep" and todo:
        result["font"] = {"path": font, "reference_build": figstep.font_build(font)}
    judged = {}
    if judge_ref is not None:  # --judge llamaguard, checked above; every process judges its share
        judged["llamaguard"] = llamaguard.judge(
            judge_ref,
            items,
            responses,
            out / benchmark / f"{subset}.llamaguard.json",
            batch_size=protocol.batch_size,
            prompt=e.llamaguard_prompt,
            mesh=e.mesh,
        )
    if not share.lead:
        return result
    if "openai-compatible" in judges:  # a remote judge: asked once
        judged["openai-compatible"] = gpt4_judge.win_rate(
            items, responses, references, images, out / benchmark / f"{subset}.judge.json", e.judge_orders
        )
    if "openai-safety" in judges:
        judged["openai-safety"] = openai_safety.judge(
            items, responses, out / benchmark / f"{subset}.openai-safety.json"
        )
    if any(j in SAFETY_JUDGES for j in judges):
        verdicts = judge_verdicts(items, responses, judged)
        result["agreement"] = agreement(verdicts)
    if judged:
        result["judges"] = {j: judged[j] for j in (*judges, "refusal-string") if j in judged}
        result["judge"] = judged[judges[0]]  # the first judge named: the shape before several judges
    key = f"{benchmark}/{subset}"
    mesh = mesh or read_json(out / SUMMARY, {}).get(key, {}).get("mesh")  # nothing generated: as recorded
    update_summary(
        out,
        key,
        dict(result, checkpoint=str(checkpoint), model="llm" if llm else "vllm", protocol=settings)
        | ({"mesh": mesh} if mesh else {})
        | ({"processes": share.count} if share.count > 1 else {}),
    )
    return result


def judge_verdicts(items, responses: dict, judged: dict) -> dict[str, dict[str, bool | None]]:
    """Every safety judge's verdict on each answered item ({judge: {key: unsafe?}}, None where it
    gave none), the refusal markers' among them (unsafe: not refused), whose summary joins
    `judged`; each model judge's summary gains the interval of its ASR."""
    answered = [i for i in items if i.key in responses]
    unsafe = [not is_refusal(responses[i.key]) for i in answered]
    judged["refusal-string"] = {
        "judge": "refusal-string",
        "markers": provenance.digest(REFUSAL_MARKERS),  # which list: a number says what scored it
        "n": len(answered),
        "unsafe": sum(unsafe),
        "asr": sum(unsafe) / len(answered) if answered else 0.0,
        "asr_ci95": bootstrap_ci(unsafe),
    }
    verdicts: dict[str, dict[str, bool | None]] = {"refusal-string": {i.key: u for i, u in zip(answered, unsafe)}}
    for name in ("llamaguard", "openai-safety"):
        if name in judged:
            saved = provenance.verdicts(judged[name]["verdicts"])
            v = {i.key: None if saved.get(i.key) is None else saved[i.key] == "unsafe" for i in answered}
            judged[name]["asr_ci95"] = bootstrap_ci([bool(x) for x in v.values()])  # unparsed: not unsafe
            verdicts[name] = v
    return verdicts


def update_summary(out, key: str, value) -> dict:
    """OUT/summary.json with `key` set to `value` (the lead process writes it; every writer goes
    through here). Returns the whole summary."""
    summary = read_json(out / SUMMARY, {})
    summary[key] = value
    write_json(out / SUMMARY, summary)
    return summary


def _responses(path) -> dict:
    return read_json(path, {})


def claim_output(out: Path | None, path: Path, record: dict, log) -> None:
    """An --out holds one checkpoint's answers, and each responses file one protocol's: each file
    has a `.run.json` beside it recording both (and, where `record` has them, the questions). A
    resume with another checkpoint or other settings is refused, naming both. `out` None checks
    the one file alone (an answers file): there a file with no record is refused too."""
    side = path.with_name(path.stem + ".run.json")
    for other in sorted(out.glob("*/*.run.json")) if out is not None else []:
        saved = json.loads(other.read_text())
        if saved["fingerprint"] != record["fingerprint"]:
            raise InputError(
                f"{out}: holds answers of {saved['checkpoint']} ({other}); this run evaluates "
                f"{record['checkpoint']}, another checkpoint. Use another --out"
            )
        control = [r.get("protocol", {}).get("image_control") for r in (saved, record)]
        if control[0] != control[1]:
            name = ["real images" if c is None else f"--image-control {c}" for c in control]
            raise InputError(
                f"{out}: holds answers with {name[0]} ({other}); this run has {name[1]}. Use another --out"
            )
    where = "--out" if out is not None else "--answers-file"
    if side.exists():
        saved = json.loads(side.read_text())
        if out is None and saved.get("fingerprint") != record["fingerprint"]:  # with an --out, checked above
            raise InputError(
                f"{path}: holds answers of {saved.get('checkpoint')}; this run answers with "
                f"{record['checkpoint']}, another checkpoint. Use another {where}"
            )
        keys = [k for k in ("protocol", "seed", "questions") if k in record or k in saved]
        changed = {k: (saved.get(k), record.get(k)) for k in keys if saved.get(k) != record.get(k)}
        a, b = changed.get("protocol", (None, None))
        if isinstance(a, dict) and isinstance(b, dict):
            del changed["protocol"]
            changed = {k: (a.get(k), b.get(k)) for k in dict.fromkeys([*b, *a]) if a.get(k) != b.get(k)} | changed
        if changed:
            diff = ", ".join(f"{k} {x!r} there, {y!r} now" for k, (x, y) in changed.items())
            raise InputError(
                f"{path}: its responses were generated with other settings ({diff}); use another "
                f"{where}, or the same settings to resume"
            )
    elif path.exists():
        if out is None:
            raise InputError(
                f"{path}: has no record ({side.name}) of the checkpoint, questions and settings that wrote "
                "it; move it away or choose another --answers-file"
            )
        log(f"warning: {path} has no record of the checkpoint and settings that wrote it; resuming it as this run's")
    if Share.current().lead:  # the others checked the same record
        write_json(side, record)


def _check_images(benchmark: str, images, missing: list, font=None) -> None:
    """Every image the missing answers need is there (or, for MM-SafetyBench, can be drawn) before
    any compute."""
    wanted = [i for i in missing if i.image]
    if not wanted:
        return
    if not images:
        what = "the VLGuard test images" if benchmark == "vlguard" else "the folder its prompts' images are under"
        raise InputError(f"--benchmark {benchmark} needs --images DIR ({what})")
    for i in wanted:
        if benchmark == "mmsafetybench" and not resolve(images, i.image).is_file():
            mmsafetybench.check_drawable(images, i, font)
        elif not resolve(images, i.image).is_file():
            raise ImageError(f"{resolve(images, i.image)}: image file not found (record {i.meta.get('id', i.key)!r})")


def _figstep_font(font, log) -> str:
    font = figstep.find_font(font)  # fail before loading the model
    if not figstep.font_build(font):
        log(
            f"warning: {font} is not a FreeMonoBold build that reproduces FigStep's official images; "
            f"renderings differ at anti-aliased edges (about 1.5% of pixels). The reference build: "
            f"FreeMonoBold.ttf from {figstep.REFERENCE_DEB} (see the README)"
        )
    return font


def _generate(
    checkpoint: CheckpointRef,
    benchmark,
    todo,
    responses,
    path,
    *,
    images,
    protocol: Protocol,
    font,
    seed,
    tqdm,
    generator=None,
    mesh=None,
) -> dict[str, int]:
    """Generate the `todo` responses into `path`; returns the mesh they ran on (mesh_record)."""
    gen, m = generator or load_generator(
        checkpoint, batch_size=protocol.batch_size, dtype=jnp.dtype(protocol.dtype), mesh=mesh
    )
    image = family_of(m.config).image_input(m.config)  # None: a text-only LLM
    blank = image.pixels(Image.new("RGB", (image.size, image.size), BLANK_COLOR), pad=False) if image else None

    def pix(item):
        if image is None:
            return None
        if item.image or item.render is not None:
            path = resolve(images, item.image) if item.image else None
            if path is None:
                real = figstep.render(str(item.render), font)
            elif benchmark == "mmsafetybench" and not path.is_file():  # drawn as its script draws it
                real = mmsafetybench.drawn(images, item, font)
            else:
                real = open_rgb(path)
            control = protocol.image_control
            shown = real if control is None else controlled(real, control, item.key, seed)
            return None if shown is None else image.pixels(shown, pad=False, name=path or "image")
        return blank if protocol.text_image == "blank" else None

    sampling = Sampling(max_new_tokens=protocol.max_new_tokens, min_new_tokens=protocol.min_new_tokens)
    bar = tqdm(total=len(todo), desc=f"{benchmark}", unit="prompt", dynamic_ncols=True)
    t0, n_tokens = time.perf_counter(), 0
    for batch in gen.batches(len(todo)):
        chunk = [todo[k] for k in batch]
        pixel_rows = [pix(i) for i in chunk]
        ids = [
            prompt_ids(
                m.tokenizer,
                m.config,
                i.prompt,
                p is not None,
                protocol.template,
                image.count(p) if image and p is not None else None,
            )
            for i, p in zip(chunk, pixel_rows)
        ]
        out = gen(ids, pixel_rows, sampling, seed)
        for item, toks in zip(chunk, out):
            responses[item.key] = response_text(m.tokenizer, toks)
        write_json(path, responses)
        n_tokens += sum(map(len, out))
        bar.update(len(chunk))
        bar.set_postfix(tok_s=f"{n_tokens / (time.perf_counter() - t0):.1f}")
    bar.close()
    return sharding.mesh_record(gen.mesh)
