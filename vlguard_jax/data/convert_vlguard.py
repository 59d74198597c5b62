"""`python -m vlguard_jax.data.convert_vlguard --src train.json --dst out.json`

VLGuard metadata -> LLaVA conversations, by the rule of the authors' `convert_to_llava_format.py`:
one random stream seeded with 0, consumed in file order; a record with more than one pair has its
pair list shuffled; the first pair's human turn is "<image>" + instruction (no newline) and the
second pair's carries no image tag. `instr-resp` is replaced by `conversations`; every other field
is kept.
"""

from __future__ import annotations

import random
import sys

from vlguard_jax.data.records import load_vlguard
from vlguard_jax.errors import ArgumentParser, cli
from vlguard_jax.flags import output
from vlguard_jax.storage.files import atomic_write_json, check_output


def _turns(pair: dict, key: str, with_image: bool) -> list[dict]:
    instruction = pair[key]
    return [
        {"from": "human", "value": ("<image>" if with_image else "") + instruction},
        {"from": "gpt", "value": pair["response"]},
    ]


def to_llava(records: list[dict], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for record in records:
        pairs = [dict(p) for p in record["instr-resp"]]
        if len(pairs) > 1:
            rng.shuffle(pairs)
            # With two pairs the authors read each instruction as the pair's first key.
            conversations = [t for i, p in enumerate(pairs[:2]) for t in _turns(p, next(iter(p)), i == 0)]
        else:
            conversations = _turns(pairs[0], "instruction", True)
        item = {k: v for k, v in record.items() if k != "instr-resp"}
        item["conversations"] = conversations
        out.append(item)
    return out


@cli
def main(argv: list[str]) -> int:
    p = ArgumentParser(
        prog="python -m vlguard_jax.data.convert_vlguard", description="VLGuard metadata -> LLaVA conversation format"
    )
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True, type=output)
    p.add_argument("--seed", type=int, default=0, help="the authors use 0")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    a = p.parse_args(argv)
    dst = check_output(a.dst, a.src, overwrite=a.overwrite)
    converted = to_llava(load_vlguard(a.src), a.seed)
    atomic_write_json(dst, converted, indent=2)
    two = sum(len(r["conversations"]) == 4 for r in converted)
    print(f"wrote {dst}: {len(converted)} conversations ({two} two-turn, {len(converted) - two} one-turn)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
