"""`python -m vlguard_jax.train --config configs/NAME.py [--config.KEY=VALUE ...] [--debug]`

Trains, or resumes when the workdir already holds checkpoints. See `configs/` and the README.
"""

import sys

from absl import logging

from vlguard_jax.errors import cli
from vlguard_jax.train.command import parse


@cli
def main(argv: list[str]) -> int:
    config = parse([sys.argv[0]] + argv, summary="Trains, or resumes when the workdir already holds checkpoints.")
    from vlguard_jax.train.loop import run  # after the flags parse: --help loads no jax

    logging.set_verbosity(logging.WARNING)  # orbax logs every save and load at INFO
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
