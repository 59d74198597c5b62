"""Model FLOPs of a training step, counted honestly for MFU.

Matmul FLOPs are 2 per multiply-add. The forward pass of every weight counts once. The backward
pass counts the activation gradient (another 2 per weight) wherever gradients flow (the whole
language model and the projector) and the weight gradient (2 more) only for trained weights: in
LoRA runs that is the LoRA factors and the projector. The vision tower runs forward only. The
lm_head is counted where it runs: at the supervised positions (the label budget).
Rematerialisation is not counted: MFU uses model FLOPs, not hardware FLOPs.
"""

from __future__ import annotations

from vlguard_jax.models.config import LORA_TARGETS


def _text_linear_params(t) -> int:
    attn = (
        t.hidden_size * (t.num_attention_heads + 2 * t.num_key_value_heads) * t.head_dim
        + t.num_attention_heads * t.head_dim * t.hidden_size
    )
    mlp = 3 * t.hidden_size * t.intermediate_size
    return t.num_hidden_layers * (attn + mlp)


def _lora_params(t, rank: int, targets: tuple[str, ...] = LORA_TARGETS) -> int:
    d, h, kv, f = (
        t.hidden_size,
        t.num_attention_heads * t.head_dim,
        t.num_key_value_heads * t.head_dim,
        t.intermediate_size,
    )
    sizes = {
        "q_proj": d + h,
        "k_proj": d + kv,
        "v_proj": d + kv,
        "o_proj": h + d,
        "gate_proj": d + f,
        "up_proj": d + f,
        "down_proj": f + d,
    }
    return t.num_hidden_layers * rank * sum(sizes[n] for n in targets)


def train_step(
    config,
    batch: int,
    length: int,
    mode: str,
    lora_rank: int = 0,
    head_positions: int | None = None,
    lora_targets: tuple[str, ...] = LORA_TARGETS,
    image_slots: int = 0,
) -> float:
    """`head_positions`: positions per row where the lm_head runs (the label budget); default all.
    The image side's FLOPs come from the model's config (`image_flops`), for images of
    `image_slots` input slots where a family's images differ in size (`PixelRule.room_of`)."""
    t = config.text
    tokens = batch * length
    head_tokens = batch * (length if head_positions is None else head_positions)
    dense = _text_linear_params(t)
    head = t.hidden_size * t.vocab_size
    # causal attention: QK^T and AV, half the square on average
    attn = t.num_hidden_layers * 2 * 2 * length * t.num_attention_heads * t.head_dim / 2
    fwd_text = 2 * dense + attn
    tower, proj, image_tokens = config.image_flops(image_slots)
    vision = batch * tower  # forward only: the tower is frozen
    projector = batch * image_tokens * 2 * proj * 2  # forward + weight gradient
    backward_act = tokens * (2 * dense + 2 * attn) + head_tokens * 2 * head  # activation gradients
    if mode == "full":
        backward_w = tokens * 2 * dense + head_tokens * 2 * head
    else:
        backward_w = tokens * 2 * _lora_params(t, lora_rank, lora_targets) * 3  # LoRA fwd, dX and dW, all small
    f = tokens * fwd_text + head_tokens * 2 * head + vision + projector + backward_act + backward_w
    return float(f)
