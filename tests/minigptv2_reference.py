"""A PyTorch reference for MiniGPT-v2, written from the published architecture (Vision-CAIR/MiniGPT-4:
`minigpt4/models/eva_vit.py`, `minigpt_v2.py`, `minigpt_base.py`), for parity tests, and the
authors' three files built from it (`write_parts`). The authors'
package needs timm and torchvision, which do not load here; this is our own code with their module
names, so `state_dict()` has their key names. The LLM is transformers' `LlamaForCausalLM` under
peft's LoRA, as theirs is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import peft
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from tests import tiny


class Attention(nn.Module):
    """One fused qkv weight; its bias is cat(q_bias, zeros, v_bias)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = Attention(dim, heads), Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class EvaViT(nn.Module):
    """EVA-01 ViT: patches + CLS + absolute positions, pre-norm blocks, no final norm."""

    def __init__(self, dim: int, depth: int, heads: int, hidden: int, image: int, patch: int):
        super().__init__()
        n = (image // patch) ** 2
        self.patch_embed = PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, hidden) for _ in range(depth)])

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return x


class MiniGPTv2(nn.Module):
    """visual_encoder -> ln_vision -> drop CLS -> view(B, N/4, 4D) -> llama_proj -> llama_model."""

    def __init__(self, eva: EvaViT, llama: transformers.LlamaForCausalLM, lora=None):
        super().__init__()
        dim = eva.cls_token.shape[-1]
        self.visual_encoder = eva
        self.ln_vision = nn.LayerNorm(dim)
        self.llama_proj = nn.Linear(4 * dim, llama.config.hidden_size)
        if lora is not None:
            llama = peft.get_peft_model(llama, lora)
        self.llama_model = llama

    def encode_img(self, pixels):
        h = self.ln_vision(self.visual_encoder(pixels))[:, 1:, :]
        b, n, d = h.shape
        return self.llama_proj(h.view(b, n // 4, d * 4))

    def embeds(self, before, pixels, after):
        """The sequence as the authors build it: the text before the image, the visual tokens, the
        text after, embedded and concatenated."""
        embed = self.llama_model.get_input_embeddings()
        return torch.cat([embed(before), self.encode_img(pixels), embed(after)], dim=1)

    def logits(self, before, pixels, after):
        return self.llama_model(inputs_embeds=self.embeds(before, pixels, after)).logits


def randomize_(module: nn.Module, seed: int = 0) -> None:
    """Every parameter random (LoRA's B and the zero biases too), so each one shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith("weight") or name.startswith("ln_vision.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def state_dict(model: nn.Module) -> dict:
    """numpy state dict under the authors' names, peft-0.2.0's: later peft inserts `.default` in
    the LoRA factors' names and `.base_layer` in the wrapped layer's."""
    return {
        k.replace(".default", "").replace(".base_layer", ""): v.detach().numpy() for k, v in model.state_dict().items()
    }


WIDTH, PATCH = 176, 56  # at 448 px: an 8x8 grid, 16 visual tokens; the file's grid is 4x4 (224 px)


@dataclasses.dataclass
class Parts:
    llm: Path
    eva: Path
    ckpt: Path
    reference: MiniGPTv2


def write_parts(tmp, *, proj_in=4 * WIDTH, drop=()) -> Parts:
    tok = tiny.tokenizer(image_token=False)
    llama = tiny.llama_model(tok, layers=2, heads=4, kv_heads=4, scale=1.0)
    llama.save_pretrained(tmp / "llm")
    tok.save_pretrained(tmp / "llm")
    file_eva = EvaViT(WIDTH, 3, 2, 352, 224, PATCH)  # three blocks in the file, two built
    randomize_(file_eva, seed=1)
    eva_sd = {k: v.detach().half() for k, v in file_eva.state_dict().items()}  # stored in float16
    torch.save(eva_sd, tmp / "eva_vit_g.pth")
    # The reference as the authors build it: 448 px, two blocks, the float16 weights read back,
    # pos_embed resized by F.interpolate (eva_vit.interpolate_pos_embed).
    eva = EvaViT(WIDTH, 2, 2, 352, 448, PATCH)
    sd = {k: v.float() for k, v in eva_sd.items() if not k.startswith("blocks.2.")}
    grid = sd["pos_embed"][:, 1:].reshape(1, 4, 4, WIDTH).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False)
    sd["pos_embed"] = torch.cat([sd["pos_embed"][:, :1], grid.permute(0, 2, 3, 1).reshape(1, 64, WIDTH)], dim=1)
    eva.load_state_dict(sd)
    lora = peft.LoraConfig(r=64, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    model = MiniGPTv2(eva, llama, lora).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # ln_vision stays as initialised (it is not in the stage-3 file)
        model.llama_proj.weight.copy_(0.05 * torch.randn(model.llama_proj.weight.shape, generator=g))
        for name, p in model.llama_model.named_parameters():
            if "lora_" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    stage3 = {k: v for k, v in state_dict(model).items() if k.startswith("llama_proj.") or "lora_" in k}
    stage3 = {k: torch.tensor(v) for k, v in stage3.items() if k not in drop}
    if proj_in != 4 * WIDTH:
        stage3["llama_proj.weight"] = torch.zeros(64, proj_in)
    torch.save({"model": stage3, "optimizer": {"state": {}}, "epoch": 3}, tmp / "minigptv2_checkpoint.pth")
    return Parts(tmp / "llm", tmp / "eva_vit_g.pth", tmp / "minigptv2_checkpoint.pth", model)
