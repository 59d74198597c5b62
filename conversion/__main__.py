"""`python -m conversion COMMAND`: runs vlguard_jax.conversion (`vlguard-convert`)."""

import sys

from vlguard_jax.conversion.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
