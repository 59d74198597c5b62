"""The Llama Guard screen of a LLaVA-format instruction mix (the paper's analysis of the harmful
samples in LLaVA's training data, and the authors' "Clean" LLaVA-v1.5 data).

The unit judged is the whole conversation of a record: its user and assistant turns in order (the
`<image>` tag dropped: Llama Guard reads text only), classified by Llama Guard's own chat template,
which assesses the assistant ('Agent') side in the context of the user turns. A record is LLaVA's
training unit and is kept or removed whole, as in the authors' clean mix; judging each exchange
apart would hide a reply's request from the judge when it came turns earlier.

Outputs for `--dst clean.json`:
- `clean.json`: the records judged safe, unchanged and in order, and those the judge could not
  classify (listed below, never dropped silently);
- `clean.flagged.jsonl`: one line per record not kept as judged safe: index, id, verdict
  (`unsafe`, or null with a reason), violated categories;
- `clean.verdicts.<p>-of-<P>.jsonl`: every verdict of process p, appended per batch, so that an
  interrupted run resumes without judging anything again. Its first line records what the
  verdicts were judged from (the source's path and sha256, the judge and its fingerprint, the
  prompt protocol) and each verdict the hash of its conversation: a resume with another source,
  judge or protocol is refused, and a verdict is reused only for the conversation it judged.

Llama Guard 2 and 3 judge only the last Agent message of a conversation; with them, a record of
several exchanges is refused rather than screened with replies left unjudged.

Under several processes (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, as training)
each judges a contiguous slice of the records; process 0 merges once all are done.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import jax
from jax.experimental import multihost_utils
from tqdm import tqdm

from vlguard_jax import storage
from vlguard_jax.checkpoints.ref import CheckpointRef
from vlguard_jax.data.conversation import IMAGE_TAG, turns
from vlguard_jax.data.records import RecordError, load_json_list, record_label, validate_llava
from vlguard_jax.evaluate.judges import llamaguard, provenance
from vlguard_jax.generate import Sampling, load_generator, response_text
from vlguard_jax.storage.files import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    check_output,
    resume_jsonl,
    sha256_file,
)

# Llama Guard 1 (the paper's judge) names its categories O1-O6; later versions use S-codes.
LLAMA_GUARD_1 = {
    "O1": "Violence and Hate",
    "O2": "Sexual Content",
    "O3": "Criminal Planning",
    "O4": "Guns and Illegal Weapons",
    "O5": "Regulated or Controlled Substances",
    "O6": "Self-Harm",
}
TOO_LONG = "too long for the judge's positions"
UNPARSED = "the judge's output is neither safe nor unsafe"


def outputs(dst) -> dict[str, Any]:
    """The screen's output paths beside DST, and the stem they share (`stem`, a string)."""
    dst = Path(dst)
    stem = dst.name[: -len(".json")] if dst.name.endswith(".json") else dst.name
    return {
        "clean": dst,
        "flagged": dst.with_name(stem + ".flagged.jsonl"),
        "verdicts": dst.with_name(stem + ".verdicts.{p}-of-{n}.jsonl"),
        "stem": stem,
    }


def identity(src, judge: CheckpointRef, prompt: str) -> dict:
    """What this run's verdicts are judged from (the first line of each verdict file)."""
    return {"source": str(Path(src).resolve()), "source_sha256": sha256_file(src)} | llamaguard.identity(judge, prompt)


def saved_verdicts(dst, current: dict) -> dict[int, dict]:
    """index -> verdict, from every process's file (any process count); a file made from another
    source, judge or protocol is refused (`provenance.check`)."""
    paths = outputs(dst)
    out: dict[int, dict] = {}
    for path in sorted(Path(dst).parent.glob(paths["stem"] + ".verdicts.*-of-*.jsonl")):
        rows = resume_jsonl(path)
        if not rows:
            continue
        provenance.check(path, rows[0].get("provenance") if isinstance(rows[0], dict) else None, current)
        for n, v in enumerate(rows[1:], 2):
            provenance.entry_fits(f"{path}: line {n}", v, ("index", "verdict"))
            if not isinstance(v["index"], int):
                raise provenance.ProvenanceError(f"{path}: line {n}: index {v['index']!r} is not a record's number")
            out[v["index"]] = v
    return out


def messages(record: dict) -> list[dict]:
    """A LLaVA record's turns as chat messages (as LLaVA reads them: a leading assistant turn
    dropped, turns alternating)."""
    roles = ("user", "assistant")
    return [
        {"role": roles[r], "content": text.replace(IMAGE_TAG, "").strip()} for r, text in turns(record["conversations"])
    ]


def categories(text: str) -> list[str]:
    """The violated categories Llama Guard lists on the line after `unsafe`."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return [c.strip() for c in lines[1].split(",") if c.strip()] if len(lines) > 1 else []


def _load(src) -> list[dict]:
    records = load_json_list(src)
    for i, r in enumerate(records):
        validate_llava(r, src, i)
        try:
            chat = messages(r)
        except ValueError as e:
            raise RecordError(f"{record_label(src, i, r)}: {e}") from None
        if not chat:
            raise RecordError(
                f"{record_label(src, i, r)}: no human turn (a leading gpt turn is dropped, as LLaVA does)"
            )
    return records


def judge_slice(
    judge: CheckpointRef,
    records: list[dict],
    indices: range,
    dst,
    path: Path,
    batch_size: int,
    current: dict,
    prompt: str,
    log=print,
) -> None:
    """Judge every record of `indices` whose conversation no verdict file beside DST holds;
    append the verdicts to `path` (its first line `current`, what they are judged from)."""
    done = saved_verdicts(dst, current)
    hashes = {i: provenance.digest(messages(records[i])) for i in indices}
    todo = [i for i in indices if done.get(i, {}).get("conversation") != hashes[i]]
    if len(todo) < len(indices):
        log(f"{path}: {len(indices) - len(todo)} records already judged, {len(todo)} to go")
    if not path.exists() or path.stat().st_size == 0:  # saved_verdicts cut any torn line already
        path.write_text(json.dumps({"provenance": current}, ensure_ascii=False) + "\n", encoding="utf-8")
    if not todo:
        return
    config, tokenizer = judge.config, judge.tokenizer
    if llamaguard.judges_last_turn_only(tokenizer):
        several = [i for i in todo if sum(r == 1 for r, _ in turns(records[i]["conversations"])) > 1]
        if several:
            i = several[0]
            raise RecordError(
                f"{record_label(current['source'], i, records[i])}: {len(several)} records have several exchanges, and this "
                "judge's template (Llama Guard 2 or 3) judges only the last reply; screen with Llama Guard 1, "
                "or split the records into single exchanges"
            )
    limit = config.text.max_position_embeddings - llamaguard.MAX_NEW_TOKENS
    prompts = {i: llamaguard.chat_ids(tokenizer, messages(records[i]), prompt) for i in todo}
    long = {i for i in todo if len(prompts[i]) > limit}
    append_jsonl(
        path,
        [
            {
                "index": i,
                "id": records[i].get("id"),
                "verdict": None,
                "categories": [],
                "output": "",
                "reason": TOO_LONG,
                "conversation": hashes[i],
            }
            for i in sorted(long)
        ],
    )
    todo = sorted((i for i in todo if i not in long), key=lambda i: len(prompts[i]))  # less padding
    if not todo:
        return
    gen, m = load_generator(judge, batch_size=batch_size)
    bar = tqdm(total=len(todo), desc="screening", unit="record", dynamic_ncols=True)
    for batch in gen.batches(len(todo)):
        chunk = [todo[k] for k in batch]
        out = gen([prompts[i] for i in chunk], [None] * len(chunk), Sampling(max_new_tokens=llamaguard.MAX_NEW_TOKENS))
        lines = []
        for i, toks in zip(chunk, out):
            text = response_text(m.tokenizer, toks)
            verdict = llamaguard.verdict(text)
            lines.append(
                {
                    "index": i,
                    "id": records[i].get("id"),
                    "verdict": verdict,
                    "categories": categories(text) if verdict == "unsafe" else [],
                    "output": text,
                    **({"reason": UNPARSED} if verdict is None else {}),
                    "conversation": hashes[i],
                }
            )
        append_jsonl(path, lines)
        bar.update(len(chunk))
    bar.close()


def merge(records: list[dict], dst, current: dict) -> dict:
    """Write the clean file and the flagged list from every process's verdicts; returns counts."""
    paths = outputs(dst)
    verdicts = saved_verdicts(dst, current)
    missing = [
        i
        for i in range(len(records))
        if verdicts.get(i, {}).get("conversation") != provenance.digest(messages(records[i]))
    ]
    if missing:
        raise RuntimeError(f"{len(missing)} records have no verdict (e.g. #{missing[0]}); run the screen again")
    flagged = [verdicts[i] for i in range(len(records)) if verdicts[i]["verdict"] != "safe"]
    keep = [r for i, r in enumerate(records) if verdicts[i]["verdict"] != "unsafe"]
    flagged_path = paths["flagged"]
    atomic_write_text(
        flagged_path,
        "".join(
            json.dumps(
                {k: v[k] for k in ("index", "id", "verdict", "categories")}
                | ({"reason": v["reason"]} if "reason" in v else {}),
                ensure_ascii=False,
            )
            + "\n"
            for v in flagged
        ),
    )
    atomic_write_json(paths["clean"], keep, ensure_ascii=False)
    by_category = collections.Counter(c for v in flagged for c in v["categories"])
    reasons = collections.Counter(v.get("reason") for v in flagged if v["verdict"] is None)
    return {
        "records": len(records),
        "kept": len(keep),
        "unsafe": len(records) - len(keep),
        "unjudged_kept": dict(reasons),
        "by_category": dict(sorted(by_category.items())),
        "clean": str(paths["clean"]),
        "flagged": str(flagged_path),
    }


def describe(counts: dict) -> str:
    lines = [f"screened {counts['records']} records: {counts['unsafe']} unsafe (removed), {counts['kept']} kept"]
    for c, n in counts["by_category"].items():
        lines.append(f"  {c}" + (f" ({LLAMA_GUARD_1[c]})" if c in LLAMA_GUARD_1 else "") + f": {n}")
    for reason, n in counts["unjudged_kept"].items():
        lines.append(f"  kept unjudged, {reason}: {n}")
    lines.append(f"wrote {counts['clean']} and {counts['flagged']}")
    return "\n".join(lines)


def screen(judge_checkpoint, src, dst, batch_size: int = 8, log=print, prompt: str = "llama-recipes") -> dict | None:
    """Screen SRC into DST; under several processes, the counts come back on process 0 only."""
    storage.local_only(dst, "--dst")
    src, dst = Path(src), check_output(dst, src)
    judge = llamaguard.check(judge_checkpoint)
    records = _load(src)
    if not records:
        raise RecordError(f"{src}: no records to screen")
    current = identity(src, judge, prompt)
    p, n = jax.process_index(), jax.process_count()
    mine = range(p * len(records) // n, (p + 1) * len(records) // n)
    path = Path(str(outputs(dst)["verdicts"]).format(p=p, n=n))
    path.parent.mkdir(parents=True, exist_ok=True)
    judge_slice(judge, records, mine, dst, path, batch_size, current, prompt, log)
    if n > 1:
        multihost_utils.sync_global_devices("vlguard_jax screen: every slice judged")
    if p != 0:
        return None
    return merge(records, dst, current)
