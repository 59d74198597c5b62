"""`python -m conversion.assemble`: runs vlguard_jax.conversion.llava_assemble (where the library code lives)."""

import sys

from vlguard_jax.conversion.llava_assemble import main

if __name__ == "__main__":
    sys.exit(main())
