"""Conversations as LLaVA's code renders them (`conversation.py`'s SeparatorStyle.TWO), for any
`Template`: the templates themselves are the families' (LLaVA's two in `llava_tokens.py`). One
renders as

    SYSTEM USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>

and a generation prompt ends with `ASSISTANT:`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vlguard_jax.errors import InputError

IMAGE_TAG = "<image>"


@dataclasses.dataclass(frozen=True)
class Template:
    name: str
    system: str
    roles: tuple[str, str] = ("USER", "ASSISTANT")
    sep: str = " "
    sep2: str = "</s>"


ROLE_OF = {"human": 0, "gpt": 1}


def move_image_tag_first(text: str) -> str:
    """LLaVA's rule: the tag is removed, the rest stripped, and '<image>\\n' put in front."""
    if IMAGE_TAG not in text:
        return text
    return (IMAGE_TAG + "\n" + text.replace(IMAGE_TAG, "").strip()).strip()


def image_tags(record: dict) -> dict:
    """A LLaVA record as LLaVA trains on it (`preprocess_multimodal`), with `image_tags` naming
    what was done where its `<image>` tags do not match its image:
    - `image_tag_missing`: an image record without a tag trains text-only (LLaVA computes the
      image's features and uses none of them), so the image is dropped;
    - `image_tags_collapsed`: several tags become one, at the front of the first turn holding one
      (LLaVA collapses them within a turn; one tag per turn in several turns would make it take
      another sample's image features);
    - `literal_image_tag`: in a text-only record `<image>` is ordinary text (LLaVA never treats it
      there); `Encoder` tokenizes it as such.
    Other records come back as they are."""
    conv = record["conversations"]
    tagged = [j for j, t in enumerate(conv) if IMAGE_TAG in t["value"]]
    if "image" not in record:
        return dict(record, image_tags="literal_image_tag") if tagged else record
    if not tagged:
        return {k: v for k, v in record.items() if k != "image"} | {"image_tags": "image_tag_missing"}
    if len(tagged) == 1 and conv[tagged[0]]["value"].count(IMAGE_TAG) == 1:
        return record
    new = [dict(t) for t in conv]
    for j in tagged:
        new[j]["value"] = new[j]["value"].replace(IMAGE_TAG, "").strip()
    new[tagged[0]]["value"] = IMAGE_TAG + "\n" + new[tagged[0]]["value"]
    return dict(record, conversations=new, image_tags="image_tags_collapsed")


def turns(conversations: list[dict], image: bool = True) -> list[tuple[int, str]]:
    """(role index, text) pairs from a LLaVA `conversations` list. As LLaVA does, a leading turn
    that is not from the human is dropped; the rest must alternate human, gpt, human, ... With
    `image` (a record with an image), a tag is moved to the front of its turn; without, text is
    left as it is."""
    conv = list(conversations)
    if conv and conv[0]["from"] != "human":
        conv = conv[1:]
    out = []
    for i, t in enumerate(conv):
        role = ROLE_OF.get(t["from"])
        if role != i % 2:
            raise InputError(f"turn {i} is from {t['from']!r}; turns must alternate human, gpt")
        out.append((role, move_image_tag_first(t["value"]) if image else t["value"]))
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
