"""Training: `python -m vlguard_jax.train --config configs/NAME.py`; `run(config)` in code."""
