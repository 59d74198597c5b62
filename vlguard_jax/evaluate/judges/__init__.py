"""Judges: the authors' GPT-4V helpfulness judge, Llama Guard (verdicts on responses, and the
screen of a training mix), and the provenance of saved verdicts. Here, what a command line may
name of them, importable without jax (vlguard_jax/flags.py says why)."""

from typing import Any

from vlguard_jax.errors import InputError

# Safety judges give each response a verdict (unsafe or not): the refusal markers (the paper's
# rule), Llama Guard, and a chat model behind an OpenAI-compatible endpoint. openai-compatible is
# the authors' helpfulness judge (a win rate against GPT-4V's answers on safe_safes).
SAFETY_JUDGES = ("refusal-string", "llamaguard", "openai-safety")
JUDGES = (*SAFETY_JUDGES, "openai-compatible")


def request_text(item) -> str:
    """What a text-only judge reads as the request: the prompt, after FigStep's rendered
    instruction where the harmful request is in the image."""
    return f"{item.render}\n{item.prompt}" if item.render else item.prompt


def judge_names(judge: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """The judges an evaluation names (`--judge`, given once or more), in order, each once."""
    names = (judge,) if isinstance(judge, str) else tuple(judge or ())
    unknown = [j for j in names if j not in JUDGES]
    if unknown:
        raise InputError(f"unknown judge {unknown[0]!r}; choose from {JUDGES}")
    return tuple(dict.fromkeys(names))


LLAMAGUARD_PROMPTS = ("llama-recipes", "chat-template")
ORDERS = (1, 2)  # openai-compatible: the authors' one order, or both


def add_prompt_argument(parser: Any) -> None:
    """`--llamaguard-prompt`, for the commands that run the judge (evaluate, data.screen)."""
    parser.add_argument(
        "--llamaguard-prompt",
        choices=LLAMAGUARD_PROMPTS,
        default="llama-recipes",
        help="llama-recipes = Meta's prompt, one BOS in front (the default); chat-template = the ids exactly "
        "as the tokenizer's chat template writes them (the model card's example)",
    )
