"""The paper's mixed lora config on LLaVA-1.5-7B: configs/paper.py with "7b,lora,mixed"."""

from ml_collections import ConfigDict

from configs import paper


def get_config() -> ConfigDict:
    return paper.get_config("7b,lora,mixed")
