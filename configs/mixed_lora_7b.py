"""Mixed VLGuard LoRA on 7B: VLGuard train appended to LLaVA's 665k mix, trained as LLaVA-1.5's
visual instruction tuning (scripts/v1_5/finetune_lora.sh): from Vicuna-7B-v1.5 with the stage-1
projector (`python -m conversion.assemble`), 1 epoch, LoRA r 128 alpha 256 at 2e-4, the projector
at 2e-5, global batch 128, cosine with 3% warmup, max length 2048, grouped by modality.

LLaVA masks the few mix samples its preprocessing cannot read and goes on; here they are skipped
and listed in WORKDIR/bad_records.jsonl. For the paper's "Clean" LLaVA, point data.llava at the
screened mix (`python -m vlguard_jax.data.screen`) and data.recipe at "llava".
"""

from vlguard_jax.train.defaults import base_config


def get_config():
    c = base_config()
    c.model.checkpoint = "checkpoints/llava-1.5-7b-pretrain-flax"
    c.data.recipe = "mixed"
    c.data.on_bad_record = "skip"
    c.epochs = 1
    c.train.mode = "lora"
    c.optim.lr = 2e-4
    c.optim.projector_lr = 2e-5
    return c
