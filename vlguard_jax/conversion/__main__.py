"""`vlguard-convert COMMAND [ARGS]` (also `python -m conversion COMMAND [ARGS]`), one front door to
the converters, each of which also runs as `python -m conversion.NAME`:

- `hf-to-flax`: a llava-hf, original-LLaVA or Llama checkpoint to vlguard-jax (conversion.hf_to_flax);
- `flax-to-hf`: a vlguard-jax checkpoint or training run to Hugging Face or PEFT (conversion.flax_to_hf);
- `assemble`: the mixed recipe's start from Vicuna, CLIP and the stage-1 projector (conversion.assemble);
- `minigptv2`: MiniGPT-v2 from Llama-2-chat, eva_vit_g.pth and the stage-3 checkpoint
  (vlguard_jax.conversion.minigptv2);
- `flax-to-minigptv2`: a MiniGPT-v2 checkpoint back to the authors' stage-3 `.pth`
  (vlguard_jax.conversion.flax_to_minigptv2).
"""

from __future__ import annotations

import importlib
import sys

from vlguard_jax.conversion.commands import COMMANDS, parse
from vlguard_jax.errors import cli


@cli
def dispatch(argv: list[str]) -> int:
    """The command's flags parse before its converter loads: `--help` and a bad flag answer at once."""
    flags = parse(argv[0], argv[1:])
    return importlib.import_module(COMMANDS[argv[0]][0]).run(flags)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--help"], ["-h"]):
        print(f"usage: vlguard-convert {{{','.join(COMMANDS)}}} [ARGS]\n")
        print((__doc__ or "").strip())
        return 0
    if not argv or argv[0] not in COMMANDS:
        got = f"unknown command {argv[0]!r}; " if argv and not argv[0].startswith("-") else ""
        print(
            f"error: vlguard-convert: {got}choose one of {', '.join(COMMANDS)} (then --help for its flags)",
            file=sys.stderr,
        )
        return 2
    return dispatch(argv)


if __name__ == "__main__":
    sys.exit(main())
