"""The one table of key names: our parameter paths <-> PyTorch state-dict names.

Our paths are '/'-joined keys of the Flax parameter tree, e.g.
`language_model/layers_3/self_attn/q_proj/kernel`. Each rule rewrites a path into the PyTorch name
for a layout and says how the tensor is transformed (`linear`: torch [out, in] <-> kernel [in, out];
`patch`: conv weight [D, C, p, p] <-> kernel [C*p*p, D]; `squeeze`: EVA's [1, 1, D] and [1, N, D]
<-> [D] and [N, D]).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from vlguard_jax.errors import CheckpointError

# Prefixes: vision tower, projector linear 1 and 2, language model body, lm_head.
# What we write: the llava-hf hub names, which transformers 4.x and 5.x both load.
HUB: dict[str, Any] = dict(
    vision="vision_tower.vision_model.",
    proj=("multi_modal_projector.linear_1.", "multi_modal_projector.linear_2."),
    lm="language_model.model.",
    lm_head="language_model.lm_head.",
)
ORIGINAL: dict[str, Any] = dict(
    vision="model.vision_tower.vision_tower.vision_model.",
    proj=("model.mm_projector.0.", "model.mm_projector.2."),
    lm="model.",
    lm_head="lm_head.",
)
# A text-only LlamaForCausalLM (Llama Guard): the language-model rules alone.
LLAMA: dict[str, Any] = dict(vision="", proj=("", ""), lm="model.", lm_head="lm_head.")
# What we read. llava-hf checkpoints name each part one of several ways: the hub (transformers 4),
# transformers >= 4.52 in memory, transformers 5 in memory (no `vision_model.` level), and
# transformers 5's save_pretrained (legacy names, but no `vision_model.` level).
LLAVA_HF_CANDIDATES: dict[str, Any] = dict(
    vision=("vision_tower.vision_model.", "model.vision_tower.vision_model.", "model.vision_tower.", "vision_tower."),
    proj=(HUB["proj"], ("model.multi_modal_projector.linear_1.", "model.multi_modal_projector.linear_2.")),
    lm=("language_model.model.", "model.language_model."),
    lm_head=("language_model.lm_head.", "lm_head."),
)
# A separate CLIP tower directory (CLIPVisionModel or CLIPModel), for --vision-tower.
CLIP_TOWER_CANDIDATES = ("vision_model.", "")
# LLaVA's stage-1 projector file (`mm_projector.bin`): an nn.Sequential(Linear, GELU, Linear) saved
# under the model's names, or with the prefix stripped.
PROJECTOR_CANDIDATES = (
    ("model.mm_projector.0.", "model.mm_projector.2."),
    ("mm_projector.0.", "mm_projector.2."),
    ("0.", "2."),
)

# MiniGPT-v2 (Vision-CAIR/MiniGPT-4): the model's state dict (minigptv2_checkpoint.pth and our
# export), where the tower sits under `visual_encoder.` and the LLM under peft's wrapper (peft-0.2.0
# LoRA names, no `.default`). eva_vit_g.pth holds the tower alone, unprefixed (`eva=""`).
MINIGPTV2: dict[str, Any] = dict(
    vision="",
    proj=("", ""),
    eva="visual_encoder.",
    lm="llama_model.base_model.model.model.",
    lm_head="llama_model.base_model.model.lm_head.",
)

# (pattern on our path, PyTorch name with {vision}/{lm}/{proj1}/{proj2}/{lm_head}/{eva}, transform)
RULES = (
    (r"vision_tower/patch_embedding/kernel", "{vision}embeddings.patch_embedding.weight", "patch"),
    (r"vision_tower/class_embedding", "{vision}embeddings.class_embedding", None),
    (r"vision_tower/position_embedding", "{vision}embeddings.position_embedding.weight", None),
    (r"vision_tower/(pre_layrnorm|post_layernorm)/(weight|bias)", r"{vision}\1.\2", None),
    (r"vision_tower/layers_(\d+)/self_attn/(\w+)/kernel", r"{vision}encoder.layers.\1.self_attn.\2.weight", "linear"),
    (r"vision_tower/layers_(\d+)/self_attn/(\w+)/bias", r"{vision}encoder.layers.\1.self_attn.\2.bias", None),
    (r"vision_tower/layers_(\d+)/(layer_norm[12])/(weight|bias)", r"{vision}encoder.layers.\1.\2.\3", None),
    (r"vision_tower/layers_(\d+)/(fc[12])/kernel", r"{vision}encoder.layers.\1.mlp.\2.weight", "linear"),
    (r"vision_tower/layers_(\d+)/(fc[12])/bias", r"{vision}encoder.layers.\1.mlp.\2.bias", None),
    (r"projector/linear_1/kernel", "{proj1}weight", "linear"),
    (r"projector/linear_1/bias", "{proj1}bias", None),
    (r"projector/linear_2/kernel", "{proj2}weight", "linear"),
    (r"projector/linear_2/bias", "{proj2}bias", None),
    (r"language_model/embed_tokens", "{lm}embed_tokens.weight", None),
    (r"language_model/layers_(\d+)/(self_attn|mlp)/(\w+)/kernel", r"{lm}layers.\1.\2.\3.weight", "linear"),
    (r"language_model/layers_(\d+)/(self_attn|mlp)/(\w+)/bias", r"{lm}layers.\1.\2.\3.bias", None),
    (
        r"language_model/layers_(\d+)/(input_layernorm|post_attention_layernorm)/weight",
        r"{lm}layers.\1.\2.weight",
        None,
    ),
    (r"language_model/norm/weight", "{lm}norm.weight", None),
    (r"language_model/lm_head/kernel", "{lm_head}weight", "linear"),
    (r"language_model/layers_(\d+)/self_attn/(\w+)/lora_a", r"{lm}layers.\1.self_attn.\2.lora_A.weight", "linear"),
    (r"language_model/layers_(\d+)/self_attn/(\w+)/lora_b", r"{lm}layers.\1.self_attn.\2.lora_B.weight", "linear"),
    # MiniGPT-v2: the EVA tower, ln_vision and llama_proj
    (r"vision_tower/patch_embed/kernel", "{eva}patch_embed.proj.weight", "patch"),
    (r"vision_tower/patch_embed/bias", "{eva}patch_embed.proj.bias", None),
    (r"vision_tower/(cls_token|pos_embed)", r"{eva}\1", "squeeze"),
    (r"vision_tower/blocks_(\d+)/(norm[12])/(weight|bias)", r"{eva}blocks.\1.\2.\3", None),
    (r"vision_tower/blocks_(\d+)/attn/(qkv|proj)/kernel", r"{eva}blocks.\1.attn.\2.weight", "linear"),
    (r"vision_tower/blocks_(\d+)/attn/proj/bias", r"{eva}blocks.\1.attn.proj.bias", None),
    (r"vision_tower/blocks_(\d+)/attn/(q_bias|v_bias)", r"{eva}blocks.\1.attn.\2", None),
    (r"vision_tower/blocks_(\d+)/(fc[12])/kernel", r"{eva}blocks.\1.mlp.\2.weight", "linear"),
    (r"vision_tower/blocks_(\d+)/(fc[12])/bias", r"{eva}blocks.\1.mlp.\2.bias", None),
    (r"ln_vision/(weight|bias)", r"ln_vision.\1", None),
    (r"llama_proj/(kernel)", "llama_proj.weight", "linear"),
    (r"llama_proj/bias", "llama_proj.bias", None),
)
_COMPILED = tuple((re.compile(p + "$"), r, t) for p, r, t in RULES)

# State-dict entries that are buffers, not weights, and are dropped without complaint.
IGNORED = re.compile(r"(position_ids|rotary_emb\.inv_freq)$")


def torch_name(path: str, prefixes: dict) -> tuple[str, str | None]:
    """(PyTorch name, transform) for one of our parameter paths under the given prefixes."""
    fill = dict(
        vision=prefixes["vision"],
        lm=prefixes["lm"],
        proj1=prefixes["proj"][0],
        proj2=prefixes["proj"][1],
        lm_head=prefixes["lm_head"],
        eva=prefixes.get("eva", ""),
    )
    for pattern, repl, transform in _COMPILED:
        if pattern.match(path):
            return pattern.sub(repl, path).format(**fill), transform
    raise KeyError(f"no key mapping for parameter {path!r}")


def _first(keys, candidates, probe: str):
    for c in candidates:
        if (c[0] if isinstance(c, tuple) else c) + probe in keys:
            return c
    return None


def detect(keys) -> tuple[str, dict]:
    """('llava_hf', 'original' or 'llama', prefixes) from the tensor names of a checkpoint."""
    keys = set(keys)
    c = LLAVA_HF_CANDIDATES
    lm = _first(keys, c["lm"], "embed_tokens.weight")
    if lm is not None:
        return "llava_hf", dict(
            lm=lm,
            vision=_first(keys, c["vision"], "embeddings.patch_embedding.weight") or c["vision"][0],
            proj=_first(keys, c["proj"], "weight") or c["proj"][0],
            lm_head=_first(keys, c["lm_head"], "weight") or c["lm_head"][0],
        )
    if "model.embed_tokens.weight" in keys and any(k.startswith("model.mm_projector.") for k in keys):
        return "original", dict(ORIGINAL)
    if "model.embed_tokens.weight" in keys and not any("vision" in k or "projector" in k for k in keys):
        return "llama", dict(LLAMA)
    sample = ", ".join(sorted(keys)[:5])
    raise CheckpointError(
        "unknown checkpoint layout: expected llava-hf (language_model.model.* or "
        "model.language_model.*), original LLaVA (model.layers.*, model.mm_projector.*) or a "
        "text-only Llama (model.layers.*, no vision tower); "
        f"found keys such as {sample}"
    )


def clip_tower_prefix(keys) -> str | None:
    return _first(set(keys), CLIP_TOWER_CANDIDATES, "embeddings.patch_embedding.weight")


def projector_prefixes(keys) -> tuple[str, str] | None:
    keys = set(keys)
    found = _first(keys, PROJECTOR_CANDIDATES, "weight")
    return found if found and found[1] + "weight" in keys else None


def flax_shape(shape: tuple, transform: str | None) -> tuple:
    """The shape `to_flax` gives a tensor of `shape`, without reading it."""
    if transform == "linear":
        return tuple(reversed(shape))
    if transform == "patch":
        return (int(np.prod(shape[1:])), shape[0])
    if transform == "squeeze":
        return tuple(d for d in shape if d != 1)
    return tuple(shape)


def source_shape(flax: tuple, transform: str | None) -> str:
    """The PyTorch shape that `flax_shape` maps to `flax`, as a message shows it."""
    if transform == "linear":
        return f"{tuple(reversed(flax))} (PyTorch's [out, in] layout)"
    if transform == "patch":
        return f"({flax[1]}, 3, k, k) with 3*k*k = {flax[0]} (PyTorch's conv layout)"
    return str(tuple(flax))


def to_flax(array: np.ndarray, transform: str | None) -> np.ndarray:
    if transform == "linear":
        return array.T
    if transform == "patch":
        return array.reshape(array.shape[0], -1).T
    if transform == "squeeze":  # EVA's cls_token [1, 1, D] and pos_embed [1, N, D]
        return array.reshape(flax_shape(array.shape, transform))
    return array


def to_torch(array: np.ndarray, transform: str | None, patch_shape: tuple | None = None) -> np.ndarray:
    if transform == "linear":
        return array.T
    if transform == "patch":
        return array.T.reshape(patch_shape)
    if transform == "squeeze":
        return array.reshape((1,) * (3 - array.ndim) + array.shape)
    return array
