"""The paper's configs carry the values of the scripts they reproduce: LLaVA-1.5's
scripts/v1_5/finetune.sh and finetune_lora.sh for the mixed recipe (which is LLaVA-1.5's visual
instruction tuning with VLGuard appended), and the VLGuard paper's post-hoc settings."""

import importlib
from pathlib import Path

import pytest

from vlguard_jax.errors import ConfigError
from vlguard_jax.train.command import find_config, load_config_file, parse

REPO = Path(__file__).resolve().parents[2]

# (config, starting checkpoint, mode, lr, projector lr) as the scripts and the paper give them
PAPER = {
    "mixed_lora_7b": ("checkpoints/llava-1.5-7b-pretrain-flax", "lora", 2e-4, 2e-5),
    "mixed_lora_13b": ("checkpoints/llava-1.5-13b-pretrain-flax", "lora", 2e-4, 2e-5),
    "mixed_full_7b": ("checkpoints/llava-1.5-7b-pretrain-flax", "full", 2e-5, 2e-5),
    "mixed_full_13b": ("checkpoints/llava-1.5-13b-pretrain-flax", "full", 2e-5, 2e-5),
    "posthoc_lora_7b": ("checkpoints/llava-1.5-7b-flax", "lora", 2e-4, 2e-5),
    "posthoc_lora_13b": ("checkpoints/llava-1.5-13b-flax", "lora", 2e-4, 2e-5),
    "posthoc_full_7b": ("checkpoints/llava-1.5-7b-flax", "full", 1e-5, 1e-5),
    "posthoc_full_13b": ("checkpoints/llava-1.5-13b-flax", "full", 1e-5, 1e-5),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_values(name):
    c = importlib.import_module(f"configs.{name}").get_config()
    checkpoint, mode, lr, projector_lr = PAPER[name]
    assert (c.model.checkpoint, c.train.mode, c.optim.lr, c.optim.projector_lr) == (checkpoint, mode, lr, projector_lr)
    # shared by finetune.sh / finetune_lora.sh: 16 per device x 8 GPUs, no weight decay, 3% warmup,
    # 2048 tokens, grouped by modality, images padded to squares, the v1 (vicuna_v1) template
    assert (c.global_batch, c.optim.weight_decay, c.optim.warmup_ratio, c.data.max_length) == (128, 0.0, 0.03, 2048)
    assert c.data.group_by_modality and c.data.pad_image and c.data.template == "vicuna_v1"
    if mode == "lora":  # --lora_r 128 --lora_alpha 256, LLaVA's default dropout 0.05
        assert (c.lora.rank, c.lora.alpha, c.lora.dropout) == (128, 256.0, 0.05)
    if name.startswith("mixed"):
        assert (c.data.recipe, c.epochs, c.data.on_bad_record) == ("mixed", 1, "skip")
    else:
        assert (c.data.recipe, c.epochs, c.data.helpful_samples) == ("posthoc", 3, 5000)


def test_a_config_is_found_by_path_or_by_its_shipped_name(tmp_path):
    shipped = find_config("posthoc_lora_7b")
    assert Path(shipped).read_text() == (REPO / "configs" / "posthoc_lora_7b.py").read_text()
    assert find_config("posthoc_lora_7b.py") == shipped
    own = tmp_path / "mine.py"
    own.write_text("from configs.demo import get_config\n")
    assert find_config(str(own)) == str(own)
    assert parse(["prog", "--config", "demo", "--config.seed=7"]).seed == 7
    with pytest.raises(
        ConfigError,
        match=r"--config posthoc_lora_8b: neither a file nor a shipped config; those "
        r"are \['demo', 'minigptv2_posthoc_lora', 'mixed_full_13b', .*'posthoc_lora_7b', 'qwen2_5_vl_posthoc_lora'\]",
    ):
        find_config("posthoc_lora_8b")


@pytest.mark.parametrize("name", sorted(PAPER))
def test_each_named_config_is_the_parameterised_one(name):
    """One source for the eight: posthoc_lora_7b is `--config paper:7b,lora,posthoc`."""
    recipe, mode, size = name.split("_")
    by_arg = find_config(f"paper:{size},{mode},{recipe}")
    assert by_arg == f"{find_config('paper')}:{size},{mode},{recipe}"
    assert load_config_file(find_config(name)).to_dict() == load_config_file(by_arg).to_dict()


def test_a_bad_paper_argument_or_key_is_one_error_naming_it():
    with pytest.raises(ConfigError, match=r"--config paper:7b,lora: expected SIZE,MODE,RECIPE"):
        parse(["prog", "--config", "paper:7b,lora"])
    with pytest.raises(ConfigError, match="optim.lrr"):
        parse(["prog", "--config", "paper:13b,full,mixed", "--config.optim.lrr=1"])


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_shipped_configs_and_the_key_groups(flag, capsys):
    with pytest.raises(SystemExit) as stop:
        parse(["python -m vlguard_jax.train", flag])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m vlguard_jax.train --config NAME_OR_FILE [--config.KEY=VALUE ...]")
    assert "demo, minigptv2_posthoc_lora, mixed_full_13b" in text and "posthoc_lora_7b" in text
    assert (
        "  optim.{b1, b2, decay_matrices_only, eps, grad_clip, iters_per_epoch, lr, max_epoch, min_lr," in text
        and "  lora.{alpha, dropout, rank, targets}" in text
    )
    with pytest.raises(SystemExit):  # with a default config, its own groups (the demo's block) are listed
        parse(["/usr/bin/vlguard-demo", "--config.seed=3", flag], default="demo", module="vlguard_jax.demo")
    text = capsys.readouterr().out
    assert text.startswith("usage: vlguard-demo [--config NAME_OR_FILE]") and "(default: demo)" in text
    assert "  demo.{eval_batch, max_new_tokens," in text


def test_the_minigptv2_config_carries_its_authors_stage3_settings():
    """train_configs/minigptv2_finetune.yaml and minigpt_v2.py, as the config's docstring lists."""
    from vlguard_jax.train.config import RunConfig
    from vlguard_jax.train.validate import check

    c = load_config_file(find_config("minigptv2_posthoc_lora"))
    c.workdir = "runs/minigptv2"
    check(c)
    r = RunConfig.from_config(c)
    assert (r.lora.rank, r.lora.alpha, r.lora.dropout, r.lora.targets) == (64, 16.0, 0.05, ("q_proj", "v_proj"))
    o = r.optim
    assert (o.lr, o.projector_lr, o.min_lr, o.warmup_start_lr) == (1e-5, 1e-5, 1e-6, 1e-6)
    assert (o.warmup_steps, o.warmup_ratio, o.iters_per_epoch, o.max_epoch) == (0, 0.02, 0, 0)  # sized to the run
    assert (o.schedule, o.weight_decay, o.decay_matrices_only, o.grad_clip, o.b1, o.b2) == (
        "lavis",
        0.05,
        True,
        0.0,
        0.9,
        0.999,
    )
    assert (r.data.template, r.data.pad_image, r.data.recipe, r.train.mode) == ("minigptv2", False, "posthoc", "lora")


def test_the_qwen_config_carries_the_sourced_values_and_validates():
    """VLGuard's post-hoc LoRA values on Qwen2.5-VL's chat template (the config's docstring)."""
    from vlguard_jax.train.config import RunConfig
    from vlguard_jax.train.validate import check

    c = load_config_file(find_config("qwen2_5_vl_posthoc_lora"))
    c.workdir = "runs/qwen"
    check(c)
    r = RunConfig.from_config(c)
    assert (r.lora.rank, r.lora.alpha, r.optim.lr, r.optim.projector_lr) == (128, 256.0, 2e-4, 2e-5)
    assert (r.epochs, r.global_batch, r.optim.warmup_ratio, r.train.freeze_projector) == (3, 128, 0.03, False)
    assert (r.data.template, r.data.pad_image, r.data.recipe) == ("qwen2_5_vl", False, "posthoc")


def test_a_command_line_that_does_not_parse_exits_2(capsys):
    from vlguard_jax.conversion.__main__ import main as convert_main
    from vlguard_jax.train.__main__ import main as train_main

    assert train_main([]) == 2 and "error: --config: required" in capsys.readouterr().err
    assert train_main(["--config", "demo", "stray"]) == 2 and "unexpected arguments" in capsys.readouterr().err
    assert convert_main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: vlguard-convert {hf-to-flax,")


def test_a_config_path_with_a_colon_is_taken_whole(tmp_path):
    folder = tmp_path / "2024-05-01T10:00"
    folder.mkdir()
    (folder / "cfg.py").write_text((Path(__file__).resolve().parents[2] / "configs" / "demo.py").read_text())
    c = parse(["x", f"--config={folder / 'cfg.py'}", "--config.workdir=w"])
    assert c.workdir == "w" and list(tmp_path.iterdir()) == [folder]
