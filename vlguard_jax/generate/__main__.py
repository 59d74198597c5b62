"""`python -m vlguard_jax.generate --checkpoint CKPT [--image PATH] --prompt TEXT [options]`
or `--prompts-file F.jsonl` (lines {"image": ..., "prompt": ...}) for a whole batch.

With `--json` each result is one line: `prompt_ids` (image positions as image_token_index once per
image feature, as in llava-hf), `token_ids` (generated) and `text`.

Under several processes (evaluate/shares.py) each generates its slice of the prompts and the first
prints them all, in order; greedy answers are those of one process, while a sampled answer
depends on its batch and so on the slicing.
"""

from __future__ import annotations

import json
import sys
import time

# Only light modules here: the generator loads once the flags parse (vlguard_jax/flags.py).
from vlguard_jax.data.images import open_rgb
from vlguard_jax.errors import ArgumentParser, InputError, at_least, cli
from vlguard_jax.flags import TEMPLATE_HELP, TEMPLATE_METAVAR, add_mesh
from vlguard_jax.storage.files import read_jsonl


def read_prompts(path) -> list[dict]:
    rows = read_jsonl(path)
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise InputError(f'{path}: prompt {n}: expected {{"prompt": str, "image": optional str}}')
    return rows


@cli
def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="python -m vlguard_jax.generate", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="converted checkpoint or training workdir")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt")
    src.add_argument("--prompts-file")
    p.add_argument("--image")
    p.add_argument(
        "--template",
        metavar=TEMPLATE_METAVAR,
        default="auto",
        help=TEMPLATE_HELP,
    )
    p.add_argument("--max-new-tokens", type=at_least(1), default=256)
    p.add_argument("--min-new-tokens", type=at_least(0), default=0, help="EOS is banned before this many tokens")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=at_least(1), default=8)
    p.add_argument("--pad-image", action="store_true", help="training-style square padding (default: eval, no pad)")
    p.add_argument("--json", action="store_true")
    add_mesh(p)
    a = p.parse_args(argv)
    from vlguard_jax.evaluate.shares import Share
    from vlguard_jax.families import check_template, family_of
    from vlguard_jax.generate import Sampling, load_generator, prompt_ids, response_text
    from vlguard_jax.generate.prompts import default_template, foreign_template
    from vlguard_jax.runtime import maybe_initialize_distributed

    check_template(a.template)
    maybe_initialize_distributed()
    share = Share.current()  # several processes: each generates its slice of the prompts
    rows = read_prompts(a.prompts_file) if a.prompts_file else [{"prompt": a.prompt, "image": a.image}]
    s = Sampling(a.temperature, a.top_k, a.top_p, a.max_new_tokens, a.min_new_tokens)
    gen, m = load_generator(a.checkpoint, batch_size=a.batch_size, mesh=a.mesh)
    template = default_template(m.config, m.tokenizer) if a.template == "auto" else a.template
    warning = foreign_template(m.config, template)
    if warning:
        print(warning, file=sys.stderr)
    spec = family_of(m.config).image_input(m.config)  # None: a text-only model
    ids, pix = [], []
    for n, row in enumerate(rows, 1):  # every row checked by every process
        image = row.get("image")
        try:  # ImageError is a ValueError
            if image and spec is None:
                raise InputError(f"{a.checkpoint} is a text-only model and takes no image")
            x = spec.pixels(open_rgb(image), a.pad_image, image) if image and spec else None
            count = None if x is None or spec is None else spec.count(x)
            pix.append(x)
            ids.append(prompt_ids(m.tokenizer, m.config, row["prompt"], bool(image), template, count))
        except ValueError as e:
            raise InputError(f"{a.prompts_file or '--prompt'}: row {n}: {e}") from None
    mine = share.of(range(len(rows)))
    t0 = time.perf_counter()
    out = share.gather(gen([ids[i] for i in mine], [pix[i] for i in mine], s, a.seed), len(rows))
    dt = time.perf_counter() - t0
    if out is None:  # the lead prints
        return 0
    for row, pi, toks in zip(rows, ids, out):
        text = response_text(m.tokenizer, toks)
        if a.json:
            print(
                json.dumps(
                    {
                        "prompt": row["prompt"],
                        "image": row.get("image"),
                        "prompt_ids": pi,
                        "token_ids": toks,
                        "text": text,
                        "template": template,
                    }
                )
            )
        else:
            print(text)
    n = sum(len(t) for t in out)
    print(f"{n} tokens in {dt:.2f} s ({n / dt:.1f} tokens/s, including compilation)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
