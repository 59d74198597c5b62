"""Each benchmark runs at the tiny preset and reports its fields. No timing assertions: timings
belong in the benchmarks, not in tests."""

import json

import pytest

from benchmarks import compile_time, eval_suite, generate_throughput, train_throughput

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("module", [train_throughput, generate_throughput])
def test_benchmark_reports_its_fields(module, capsys):
    out = module.main(["--preset", "tiny", "--peer", "torch", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["preset"] == "tiny" and printed["ours"]["tokens_per_s"] > 0
    assert printed["peer"]["tokens_per_s"] > 0 and printed["ratio"] > 0
    ours = out["ours"]
    key = "step_s_all" if module is train_throughput else "batch_s_all"
    assert len(ours[key]) >= 5 and ours["compile_s"] > 0
    if module is train_throughput:
        assert ours["model_flops_per_step"] > 0 and ours["floor_tokens_per_s"] > 0 and "mfu" in ours
        assert out["length"] == 32 and out["lora_rank"] == 4
    else:
        assert ours["prefill_s"] > 0 and ours["decode_step_s"] == (ours["batch_s"] - ours["prefill_s"]) / 3
        assert ours["measured_bytes_per_s"] > 0 and ours["decode_memory_floor_s"] > ours["decode_weights_floor_s"]
        assert 0 < ours["lm_weight_bytes"] < ours["weight_bytes"] and printed["peer"]["prefill_s"] > 0


def test_compile_time_benchmark_compiles_abstract_programs(capsys):
    # The generator only: the training step's abstract state is the trainer's own (tests/train).
    out = compile_time.main(
        ["--preset", "tiny", "--layers", "1,2", "--forms", "scanned", "--programs", "generator", "--json"]
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    assert [(r["program"], r["layers"]) for r in out["results"]] == [("generator", 1), ("generator", 2)]
    assert all(r["total_s"] == r["lower_s"] + r["compile_s"] and r["compile_s"] > 0 for r in out["results"])
    assert set(out["deepest_over_shallowest"]) == {"generator/scanned"}


def test_eval_suite_benchmark_reports_both_sides(capsys):
    out = eval_suite.main(["--preset", "tiny", "--peer", "torch", "--items", "3", "--batch", "2", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == out and out["items"] == 3 and out["new_tokens"] == 256
    for side in ("ours", "peer"):
        assert out[side]["total_s"] > out[side]["load_s"] > 0
        assert out[side]["tokens_per_s"] == 3 * 256 / out[side]["total_s"]
    assert out["ratio"] == out["peer"]["total_s"] / out["ours"]["total_s"]


def test_train_flops_count_lora_honestly():
    """LoRA needs no weight gradients for frozen weights: fewer FLOPs than full fine-tuning, and the
    lm_head only where labels are."""
    from benchmarks import presets
    from vlguard_jax.train import flops

    p = presets.get("small")
    lora = flops.train_step(p.config, 8, 256, "lora", 16, head_positions=128)
    full = flops.train_step(p.config, 8, 256, "full", 0, head_positions=128)
    all_heads = flops.train_step(p.config, 8, 256, "lora", 16)
    assert lora < full < 1.5 * lora and lora < all_heads
    assert 250e9 < lora < 400e9  # the estimate for this preset: about 330-370 GFLOP


def test_eva_tower_benchmark_reports_its_fields(capsys):
    from benchmarks import eva_tower

    out = eva_tower.main(["--size", "tiny", "--dtype", "float32", "--json"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    assert out["blocks"] == 2 and len(out["forward_s_all"]) >= 5 and out["images_per_s"] > 0
    # ViT-g at 448 px: about 2.26 TFLOP per image with the projection (the 2.25).
    assert 2.2e12 < eva_tower.tower_flops(eva_tower.SIZES["g"]) < 2.3e12


def test_minigptv2_training_benchmark_times_its_own_lora_step(capsys):
    """The MiniGPT-v2 preset times the trainer's step on MiniGPT-v2 (LoRA on q/v only, so fewer
    FLOPs than the same shapes with LoRA everywhere); there is no PyTorch peer to compare with."""
    from benchmarks import presets
    from vlguard_jax.train import flops

    out = train_throughput.main(["--preset", "minigptv2-tiny", "--json"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    assert out["lora_targets"] == ["q_proj", "v_proj"] and out["ours"]["tokens_per_s"] > 0
    p = presets.get("minigptv2-tiny", families=("minigptv2",))
    qv = flops.train_step(p.config, 8, 32, "lora", 4, lora_targets=p.lora_targets)
    assert qv < flops.train_step(p.config, 8, 32, "lora", 4)
    with pytest.raises(SystemExit, match="no PyTorch peer"):
        train_throughput.main(["--preset", "minigptv2-tiny", "--peer", "torch"])
    with pytest.raises(SystemExit, match="is a MiniGPT-v2; this benchmark times llava presets"):
        generate_throughput.main(["--preset", "minigptv2-tiny"])


def test_qwen_training_benchmark_times_its_step_on_one_image_bucket(capsys):
    """The Qwen2.5-VL preset times the trainer's step on Qwen2.5-VL with images of the preset's
    size (4 x 4 merged tokens: 64 patches, their own bucket); its MFU counts the tower over the
    bucket's patches, so a larger image is more FLOPs."""
    from benchmarks import presets
    from vlguard_jax.train import flops

    out = train_throughput.main(["--preset", "qwen2.5-vl-tiny", "--json"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    assert out["ours"]["tokens_per_s"] > 0
    p = presets.get("qwen2.5-vl-tiny", families=("qwen2_5_vl",))
    batch = presets.train_batch(p)
    assert batch["pixel_values"]["patches"].shape[:2] == (p.batch, 64)
    assert (batch["input_ids"] == p.config.image_token_index).sum(axis=1).tolist() == [16] * p.batch
    assert flops.train_step(p.config, 8, 32, "lora", 4, image_slots=256) < flops.train_step(
        p.config, 8, 32, "lora", 4, image_slots=1024
    )
