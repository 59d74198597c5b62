"""`python -m vlguard_jax.demo`: the demo's front door (the package's docstring says what it does)."""

import sys

from absl import logging

from vlguard_jax.errors import cli
from vlguard_jax.train.command import parse


@cli
def main(argv: list[str]) -> int:
    config = parse(
        [sys.argv[0]] + argv,
        default="demo",
        module="vlguard_jax.demo",
        summary="The paper's effect end to end on the built-in sample data, on CPU (see the README).",
    )
    from vlguard_jax.demo.llava_stages import run_demo  # after the flags parse: --help loads no jax

    logging.set_verbosity(logging.WARNING)  # orbax logs every save and load at INFO
    run_demo(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
