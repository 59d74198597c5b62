"""Model families: a checkpoint's family is decided from its saved config, once, and every layer
asks the family (images, training, template, model class) instead of testing types itself."""

import json
from types import SimpleNamespace

import pytest

from vlguard_jax.data.images import ClipPixels, ImageInput, SquashPixels
from vlguard_jax.errors import CheckpointError
from vlguard_jax.families import LLAMA, LLAVA, MINIGPTV2, build_model, family_named, family_of, load_config
from vlguard_jax.models.config import LoraSpec
from vlguard_jax.models.llava import LlavaModel
from vlguard_jax.models.llava_config import LlavaConfig
from vlguard_jax.models.minigptv2 import MiniGPTv2Config
from vlguard_jax.models.text_only import TextOnlyModel
from vlguard_jax.models.text_only_config import TextOnlyConfig


def test_a_config_knows_its_family_and_a_saved_one_reads_back_as_itself(tmp_path):
    for config, family, model in ((LlavaConfig(), LLAVA, LlavaModel), (TextOnlyConfig(), LLAMA, TextOnlyModel)):
        assert family_of(config) is family
        config.save(tmp_path / f"{family.name}.json")
        assert load_config(tmp_path / f"{family.name}.json") == config
        assert type(build_model(config)) is model
    assert (LLAVA.takes_images, LLAVA.trainable, LLAMA.takes_images, LLAMA.trainable) == (True, True, False, False)


def test_a_config_file_without_a_tag_is_llava_and_an_unknown_tag_is_named():
    assert family_named({"text": {}, "vision": {}}) is LLAVA  # files written before families
    assert family_named({"architecture": "llama"}) is LLAMA
    with pytest.raises(CheckpointError, match=r"ck/model_config.json: architecture 'minigpt_v9' is not a known"):
        family_named({"architecture": "minigpt_v9"}, "ck/model_config.json")


def test_expecting_a_family_refuses_another_by_name(tmp_path):
    TextOnlyConfig().save(tmp_path / "model_config.json")
    with pytest.raises(CheckpointError, match="a text-only Llama checkpoint, not a LLaVA one .*--judge-checkpoint"):
        load_config(tmp_path / "model_config.json", LLAVA)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CheckpointError, match="bad.json: invalid JSON at line 1"):
        load_config(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"architecture": "llama"}))
    with pytest.raises(CheckpointError, match="partial.json: not a llama model config"):
        load_config(tmp_path / "partial.json")


def test_default_templates():
    assert LLAVA.default_template(None) == "llava_v1"
    assert LLAMA.default_template(SimpleNamespace(chat_template="{{ x }}")) == "chat_template"
    assert LLAMA.default_template(SimpleNamespace(chat_template=None)) == "vicuna_v1"


def test_lora_on_a_family_that_does_not_train_is_a_bug():
    with pytest.raises(ValueError, match="LoRA applies to trainable families"):
        build_model(TextOnlyConfig(), lora=LoraSpec(8, 16.0, 0.0, ("q_proj",)))


def test_each_family_says_how_it_takes_an_image():
    """LLaVA-1.5: 336 px CLIP pixels, 576 tokens; MiniGPT-v2: 448 px squashed, 256 tokens; a
    text-only Llama takes none. The blank slot is the shape the sampler batches."""

    assert LLAVA.image_input(LlavaConfig()) == ImageInput(ClipPixels(336), 3, 576)
    assert MINIGPTV2.image_input(MiniGPTv2Config()) == ImageInput(SquashPixels(448), 3, 256)
    assert LLAMA.image_input(TextOnlyConfig()) is None and not LLAMA.takes_images
    assert ImageInput(ClipPixels(28), 3, 4).blank(2).shape == (2, 3, 28, 28)
