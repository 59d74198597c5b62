"""The paper's eight training configs from one source: `get_config("SIZE,MODE,RECIPE")`.

SIZE is 7b or 13b, MODE lora or full, RECIPE posthoc or mixed; on the command line,
`--config paper:7b,lora,posthoc` (the named configs, such as posthoc_lora_7b, are aliases).

- posthoc: VLGuard train + 5,000 LLaVA samples on a finished LLaVA-1.5, 3 epochs; LoRA at 2e-4
  (projector 2e-5), full fine-tuning at 1e-5.
- mixed: VLGuard train appended to LLaVA's 665k mix, trained as LLaVA-1.5's visual instruction
  tuning (scripts/v1_5/finetune.sh, finetune_lora.sh) from Vicuna-v1.5 with the stage-1 projector
  (`python -m conversion.assemble`): 1 epoch, LoRA r 128 alpha 256 at 2e-4 with the projector at
  2e-5, or full fine-tuning at 2e-5 for the LLM and projector alike. LLaVA masks the few mix samples
  its preprocessing cannot read and goes on; here they are skipped and listed in
  WORKDIR/bad_records.jsonl. For the paper's "Clean" LLaVA, point data.llava at the screened mix
  (`python -m vlguard_jax.data.screen`) and data.recipe at "llava".

Shared (RunConfig's defaults): global batch 128, cosine with 3% warmup, no weight decay, max
length 2048, grouped by modality, images padded to squares, the vicuna_v1 template.
"""

from ml_collections import ConfigDict

from vlguard_jax.data.config import DataConfig
from vlguard_jax.errors import ConfigError
from vlguard_jax.train.config import ModeConfig, ModelConfig, OptimConfig, RunConfig

SIZES, MODES, RECIPES = ("7b", "13b"), ("lora", "full"), ("posthoc", "mixed")
# (mode, recipe) -> (LLM lr, projector lr), as the paper and LLaVA-1.5's scripts give them
LEARNING_RATES = {
    ("lora", "posthoc"): (2e-4, 2e-5),
    ("full", "posthoc"): (1e-5, 1e-5),
    ("lora", "mixed"): (2e-4, 2e-5),
    ("full", "mixed"): (2e-5, 2e-5),
}


def get_config(arg: str = "7b,lora,posthoc") -> ConfigDict:
    parts = [p.strip() for p in arg.split(",")]
    if len(parts) != 3 or parts[0] not in SIZES or parts[1] not in MODES or parts[2] not in RECIPES:
        raise ConfigError(
            f"--config paper:{arg}: expected SIZE,MODE,RECIPE with SIZE in {SIZES}, MODE in {MODES}, RECIPE in {RECIPES}"
        )
    size, mode, recipe = parts
    mixed = recipe == "mixed"  # from Vicuna + the stage-1 projector, over LLaVA's whole mix
    lr, projector_lr = LEARNING_RATES[mode, recipe]
    return RunConfig(
        epochs=1 if mixed else 3,
        micro_batch=8 if mode == "full" else 16,
        model=ModelConfig(checkpoint=f"checkpoints/llava-1.5-{size}{'-pretrain' if mixed else ''}-flax"),
        train=ModeConfig(mode),
        optim=OptimConfig(lr=lr, projector_lr=projector_lr),
        # LLaVA-1.5's finetune scripts: --version v1, the vicuna_v1 template
        data=DataConfig(recipe=recipe, template="vicuna_v1", on_bad_record="skip" if mixed else "raise"),
    ).to_config()
