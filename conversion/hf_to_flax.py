"""`python -m conversion.hf_to_flax`: runs vlguard_jax.conversion.hf_to_flax (where the library code lives)."""

import sys

from vlguard_jax.conversion.hf_to_flax import main

if __name__ == "__main__":
    sys.exit(main())
