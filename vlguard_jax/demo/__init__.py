"""`python -m vlguard_jax.demo [--config configs/demo.py] [--config.workdir=DIR]`

The paper's effect end to end on a laptop CPU, through the same train, convert and evaluate code a
7B run uses:
  0. the built-in sample data, a tokenizer trained on it, and a random tiny LLaVA checkpoint;
  1. "unsafe" starting model: full instruction tuning on the helpfulness data, which complies with
     harmful requests (as LLaVA's own data partly does);
  2. VLGuard post-hoc LoRA: VLGuard-format train split + a helpfulness subset;
  3. both evaluated on the held-out test split: ASR on `unsafes` and `safe_unsafes` (official
     refusal markers), helpfulness on `safe_safes` (token F1 against the reference answers);
  4. a before/after table and report (Markdown + PNG) under WORKDIR/report.
Each stage resumes if interrupted: rerun the same command.
"""
