"""Judges: the authors' GPT-4V helpfulness judge, Llama Guard (verdicts on responses, and the
screen of a training mix), and the provenance of saved verdicts."""
