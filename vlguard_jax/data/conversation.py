"""LLaVA's conversation templates, exactly: `vicuna_v1` (training) and `llava_v1` (the VLGuard
evaluation). Both render as

    SYSTEM USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>

and a generation prompt ends with `ASSISTANT:`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

IMAGE_TAG = "<image>"


@dataclasses.dataclass(frozen=True)
class Template:
    name: str
    system: str
    roles: tuple[str, str] = ("USER", "ASSISTANT")
    sep: str = " "
    sep2: str = "</s>"


TEMPLATES = {
    "vicuna_v1": Template(
        "vicuna_v1",
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the user's questions.",
    ),
    "llava_v1": Template(
        "llava_v1",
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the human's questions.",
    ),
}
ROLE_OF = {"human": 0, "gpt": 1}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; choose from {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def move_image_tag_first(text: str) -> str:
    """LLaVA's rule: the tag is removed, the rest stripped, and '<image>\\n' put in front."""
    if IMAGE_TAG not in text:
        return text
    return (IMAGE_TAG + "\n" + text.replace(IMAGE_TAG, "").strip()).strip()


def turns(conversations: list[dict]) -> list[tuple[int, str]]:
    """(role index, text) pairs from a LLaVA `conversations` list. As LLaVA does, a leading turn
    that is not from the human is dropped; the rest must alternate human, gpt, human, ..."""
    conv = list(conversations)
    if conv and conv[0]["from"] != "human":
        conv = conv[1:]
    out = []
    for i, t in enumerate(conv):
        role = ROLE_OF.get(t["from"])
        if role != i % 2:
            raise ValueError(f"turn {i} is from {t['from']!r}; turns must alternate human, gpt")
        out.append((role, move_image_tag_first(t["value"])))
    return out


def render(template: Template, messages: Sequence[tuple[int, str | None]]) -> str:
    """The prompt text; a final (1, None) message leaves `ASSISTANT:` open for generation."""
    seps = (template.sep, template.sep2)
    text = template.system + template.sep
    for i, (role, message) in enumerate(messages):
        name = template.roles[role]
        text += f"{name}: {message}{seps[i % 2]}" if message else f"{name}:"
    return text


def generation_prompt(template: Template, question: str, image: bool) -> str:
    """A one-turn prompt ending in `ASSISTANT:`, the image tag first when there is an image."""
    q = move_image_tag_first(IMAGE_TAG + question) if image else question
    return render(template, [(0, q), (1, None)])
