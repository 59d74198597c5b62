"""Weight converters between Hugging Face / original LLaVA checkpoints and vlguard-jax."""
