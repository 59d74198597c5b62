"""Config parsing from llava-hf (transformers 4 and 5 keys) and original-LLaVA JSON."""

import pytest
import transformers

from vlguard_jax.models.llava_config import KNOWN_CLIP_TOWERS, LlavaConfig

LLAVA_15_7B_HUB = {  # llava-hf/llava-1.5-7b-hf config.json, transformers 4 style
    "architectures": ["LlavaForConditionalGeneration"],
    "ignore_index": -100,
    "image_token_index": 32000,
    "model_type": "llava",
    "pad_token_id": 32001,
    "projector_hidden_act": "gelu",
    "text_config": {
        "architectures": ["LlamaForCausalLM"],
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "rms_norm_eps": 1e-05,
        "torch_dtype": "float16",
        "vocab_size": 32064,
    },
    "tie_word_embeddings": False,
    "vision_config": {
        "hidden_size": 1024,
        "image_size": 336,
        "intermediate_size": 4096,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000,
    },
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "vocab_size": 32064,
}


def test_llava_15_7b_hub_config():
    c = LlavaConfig.from_hf(LLAVA_15_7B_HUB)
    assert c.num_image_tokens == 576 and c.num_vision_layers_used == 23
    assert (c.text.hidden_size, c.text.num_hidden_layers, c.text.head_dim, c.text.vocab_size) == (4096, 32, 128, 32064)
    assert c.text.rope_theta == 10000.0 and c.text.rope_scaling is None and c.image_token_index == 32000


def test_to_hf_is_read_back_by_transformers_and_by_us():
    c = LlavaConfig.from_hf(LLAVA_15_7B_HUB)
    hf = transformers.LlavaConfig.from_dict(c.to_hf())
    assert hf.text_config.num_hidden_layers == 32 and hf.vision_config.image_size == 336
    assert LlavaConfig.from_hf(hf.to_dict()) == c
    assert LlavaConfig.from_dict(c.to_dict()) == c


def test_llama3_rope_in_legacy_and_new_keys():
    legacy = {
        "rope_theta": 500000.0,
        "rope_scaling": {
            "type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    }
    new = {
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    }
    a = LlavaConfig.from_hf(dict(LLAVA_15_7B_HUB, text_config=legacy))
    b = LlavaConfig.from_hf(dict(LLAVA_15_7B_HUB, text_config=new))
    assert a == b and a.text.rope_theta == 500000.0 and a.text.rope_scaling_dict["factor"] == 8.0


def test_original_llava_config():
    orig = {
        "model_type": "llava_llama",
        "hidden_size": 5120,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "intermediate_size": 13824,
        "vocab_size": 32000,
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_hidden_size": 1024,
        "mm_vision_select_layer": -2,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_feature": "patch",
    }
    c = LlavaConfig.from_original_llava(orig, None, 32000)
    assert c.vision.image_size == 336 and c.text.hidden_size == 5120 and c.num_image_tokens == 576
    with pytest.raises(ValueError, match="mm_projector_type 'linear' is not supported"):
        LlavaConfig.from_original_llava(dict(orig, mm_projector_type="linear"), None, 32000)
    with pytest.raises(ValueError, match="not a known CLIP; pass --vision-tower"):
        LlavaConfig.from_original_llava(dict(orig, mm_vision_tower="my/clip"), None, 32000)
    assert "openai/clip-vit-large-patch14-336" in KNOWN_CLIP_TOWERS


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(vision_feature_select_strategy="cls"), "vision_feature_select_strategy must be"),
        (dict(vision_feature_layer=30), "out of range"),
        (dict(vision_feature_layer=[-2, -5]), "a single layer index is"),
        (dict(projector_hidden_act="relu"), "projector_hidden_act 'relu' is not supported"),
    ],
)
def test_unsupported_configs_are_errors(change, message):
    with pytest.raises(ValueError, match=message):
        LlavaConfig.from_hf(dict(LLAVA_15_7B_HUB, **change))
