"""Helpfulness: LLaVA-1.5's question files answered (vqa), its scorers, answer normalisation,
image modes, and the GPT graders (MM-Vet, LLaVA-Bench)."""
