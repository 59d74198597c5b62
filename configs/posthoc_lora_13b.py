"""The paper's posthoc lora config on LLaVA-1.5-13B: configs/paper.py with "13b,lora,posthoc"."""

from ml_collections import ConfigDict

from configs import paper


def get_config() -> ConfigDict:
    return paper.get_config("13b,lora,posthoc")
