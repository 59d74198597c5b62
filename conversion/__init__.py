"""The converters live in `vlguard_jax.conversion`; this package keeps `python -m conversion.NAME`
and `python -m conversion COMMAND` working (each module here only runs the real command)."""
