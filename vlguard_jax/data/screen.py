"""`python -m vlguard_jax.data.screen --judge-checkpoint GUARD --src mix.json --dst clean.json [--batch-size N]`

Classifies every conversation of a LLaVA-format file with a converted Llama Guard and writes the
records judged safe to DST, the others to DST's `.flagged.jsonl`, with counts per category. An
interrupted run resumes without judging again; under several processes (the JAX_* variables, as
training) each judges its slice. This module is the command's front door only: the screen itself
is `vlguard_jax.evaluate.judges.screening`, which runs on the generator.
"""

from __future__ import annotations

import sys

from vlguard_jax.errors import ArgumentParser, at_least, cli
from vlguard_jax.evaluate.judges import add_prompt_argument
from vlguard_jax.flags import output


@cli
def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="python -m vlguard_jax.data.screen", description=(__doc__ or "").split("\n\n")[1])
    p.add_argument("--judge-checkpoint", required=True, help="Llama Guard converted by conversion.hf_to_flax")
    p.add_argument("--src", required=True, help="LLaVA-format JSON (e.g. llava_v1_5_mix665k.json)")
    p.add_argument("--dst", required=True, type=output, help="the clean file to write (must not exist)")
    p.add_argument("--batch-size", type=at_least(1), default=8)
    add_prompt_argument(p)
    a = p.parse_args(argv)
    from vlguard_jax.evaluate.judges import screening  # after the flags parse: --help loads no jax
    from vlguard_jax.runtime import maybe_initialize_distributed

    maybe_initialize_distributed()
    counts = screening.screen(a.judge_checkpoint, a.src, a.dst, a.batch_size, prompt=a.llamaguard_prompt)
    if counts is not None:
        print(screening.describe(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
