"""`python -m vlguard_jax.train --config configs/NAME.py [--config.KEY=VALUE ...]`

Trains, or resumes when the workdir already holds checkpoints. See `configs/` and the README.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file with get_config()", lock_config=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save and load at INFO
    from vlguard_jax.data.records import RecordError
    from vlguard_jax.train.loop import NonFiniteError, run
    try:
        run(_CONFIG.value)
    except (FileNotFoundError, RecordError, NonFiniteError, ValueError) as e:
        # Bad input or a diverged run: the message says what and where; no traceback needed.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
