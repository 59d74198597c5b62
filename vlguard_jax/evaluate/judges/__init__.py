"""Judges: the authors' GPT-4V helpfulness judge, Llama Guard (verdicts on responses, and the
screen of a training mix), and the provenance of saved verdicts. Here, what a command line may
name of them, importable without jax (vlguard_jax/flags.py says why)."""

from typing import Any

JUDGES = ("openai-compatible", "llamaguard")
LLAMAGUARD_PROMPTS = ("llama-recipes", "chat-template")


def add_prompt_argument(parser: Any) -> None:
    """`--llamaguard-prompt`, for the commands that run the judge (evaluate, data.screen)."""
    parser.add_argument(
        "--llamaguard-prompt",
        choices=LLAMAGUARD_PROMPTS,
        default="llama-recipes",
        help="llama-recipes = Meta's prompt, one BOS in front (the default); chat-template = the ids exactly "
        "as the tokenizer's chat template writes them (the model card's example)",
    )
