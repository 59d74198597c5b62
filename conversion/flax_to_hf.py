"""`python -m conversion.flax_to_hf`: runs vlguard_jax.conversion.flax_to_hf (where the library code lives)."""

import sys

from vlguard_jax.conversion.flax_to_hf import main

if __name__ == "__main__":
    sys.exit(main())
