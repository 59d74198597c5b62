"""The catalogue of user errors (README, "Errors"): every kind of bad input or fault, each with the
exact message it gets. A command prints one `error:` line and exits non-zero; a bad record raises
naming file and record, or is counted and listed under `skip`; nothing half-written looks done.
Later work adds its cases here."""

import asyncio
import errno
import gc
import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import jax
import psutil
import pytest
from PIL import Image

from tests import tiny
from tests.train import common
from tests.train.test_loop import REPO, config_file, run_env, train_cmd
from vlguard_jax.conversion.flax_to_hf import main as flax_to_hf_main
from vlguard_jax.conversion.hf_to_flax import main as hf_to_flax_main
from vlguard_jax.data import mixture
from vlguard_jax.data.convert_vlguard import main as convert_vlguard_main
from vlguard_jax.data.images import ClipPixels, ImageError, ImageInput, SquashPixels, load_pixels, open_rgb
from vlguard_jax.data.llava_tokens import encode
from vlguard_jax.data.records import RecordError
from vlguard_jax.data.sample import main as sample_main
from vlguard_jax.data.tokenization import TokenizationError
from vlguard_jax.errors import ConfigError, ResourceError, cli
from vlguard_jax.evaluate.__main__ import main as evaluate_main
from vlguard_jax.generate import Sampling, load_generator
from vlguard_jax.storage.files import atomic_dir, atomic_write_json, atomic_write_text
from vlguard_jax.train.command import flat_keys, unknown_key
from vlguard_jax.train.defaults import base_config
from vlguard_jax.train.loop import run as train
from vlguard_jax.train.validate import check
from vlguard_jax.train.workdir import WorkdirBusy


def error_line(capsys) -> str:
    """The one `error:` line a command printed (libraries may log warnings beside it)."""
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("catalogue")
    return common.setup(tmp), tmp


# ---- configs and flags: checked before anything loads -------------------------------------------
@pytest.mark.parametrize(
    "key,value,message",
    [
        ("global_batch", 0, "config.global_batch: 0 is below 1"),
        ("model.dtype", "float8", "config.model.dtype: 'float8' is not one of ['bfloat16', 'float16', 'float32']"),
        ("optim.lr", -1.0, "config.optim.lr: -1.0 is not above 0"),
        (
            "mesh.shape",
            (2, 0, 1),
            "config.mesh.shape: (2, 0, 1): each axis is a positive size, or -1 (the remaining devices) for one axis",
        ),
        (
            "micro_batch",
            48,
            "config.global_batch: 128 is not a multiple of config.micro_batch 48 (the accumulation "
            "steps must be whole)",
        ),
        ("data.llava", "", "config.data.llava: '' is not a non-empty path (the posthoc recipe reads it)"),
        ("lora.dropout", 1.0, "config.lora.dropout: 1.0 is not below 1"),
    ],
)
def test_config_values_are_checked(key, value, message):
    c = base_config()
    c.workdir, c.model.checkpoint = "w", "ckpt"
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ConfigError) as e:
        check(c)
    assert str(e.value) == message


@pytest.mark.slow
def test_a_misspelt_key_names_the_key_meant(env):
    assert (
        str(unknown_key("optim.lr_typo", flat_keys(base_config())))
        == "config.optim.lr_typo: no such key; did you mean config.optim.lr?"
    )
    ns, tmp = env
    cfg = config_file(ns, tmp, "typo")
    for override, message in (
        ("--config.optim.lr_typo=1", "error: config.optim.lr_typo: no such key; did you mean config.optim.lr?"),
        ("--config.global_batch=0", "error: config.global_batch: 0 is below 1"),
    ):
        out = subprocess.run(
            train_cmd(cfg, tmp / "typo", override), env=run_env(), capture_output=True, text=True, timeout=300, cwd=REPO
        )
        assert out.returncode == 1 and out.stderr.strip().splitlines()[-1] == message, out.stderr[-2000:]
        assert "Traceback" not in out.stderr and not (tmp / "typo" / "checkpoints").exists()


def test_command_line_flags_are_checked(env, capsys):
    ns, tmp = env
    assert (
        evaluate_main(
            [
                "--checkpoint",
                str(ns.flax_dir),
                "--benchmark",
                "advbench",
                "--data",
                "x.csv",
                "--out",
                str(tmp / "o"),
                "--max-new-tokens",
                "0",
            ]
        )
        == 2
    )
    assert error_line(capsys) == (
        "error: python -m vlguard_jax.evaluate: argument --max-new-tokens: must be at least 1, got 0"
    )
    (tmp / "a_file").write_text("x")
    assert (
        evaluate_main(
            [
                "--checkpoint",
                str(ns.flax_dir),
                "--benchmark",
                "advbench",
                "--data",
                "x.csv",
                "--out",
                str(tmp / "a_file"),
            ]
        )
        == 2
    )
    assert error_line(capsys) == f"error: --out {tmp / 'a_file'}: a file, not a directory"
    with pytest.raises(FileNotFoundError):  # --debug: the traceback, for a bug report
        evaluate_main(["score", "--responses", str(tmp / "missing.json"), "--debug"])


# ---- records -------------------------------------------------------------------------------
def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares its size and holds no pixels: what a decompression bomb shows first."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    big = png_header(tmp_path / "big.png", 10_000, 10_000)
    with pytest.raises(ImageError) as e:
        open_rgb(big)
    assert str(e.value) == (
        f"{big}: 10000x10000 pixels, over the limit of 89,478,485 (data.max_image_pixels); refused before decoding"
    )
    with pytest.raises(ImageError, match=r"bomb.png: over the pixel limit, refused before decoding \(Image size "):
        open_rgb(png_header(tmp_path / "bomb.png", 100_000, 100_000))
    with pytest.raises(ImageError, match=r"112x84 pixels, over the limit of 1,000"):
        open_rgb(png_header(tmp_path / "small.png", 112, 84), max_pixels=1000)


def test_a_thin_image_is_refused_before_padding_or_resizing_makes_it_huge(tmp_path):
    thin = tmp_path / "thin.png"
    Image.new("RGB", (1, 60_000), (9, 9, 9)).save(thin)
    assert thin.stat().st_size < 2_000 and open_rgb(thin).size == (1, 60_000)  # under the pixel limit
    with pytest.raises(ImageError) as e:
        load_pixels(tmp_path, "thin.png", 28, pad=True)
    assert str(e.value) == (
        f"{thin}: 1x60000 pixels; padding it to a 60000x60000 square would make over 89,478,485 pixels "
        "(data.max_image_pixels); refused"
    )
    for rule in (ClipPixels(336), ClipPixels(28), SquashPixels(448)):  # 28 px: 47M pixels, 1.3 GB before
        with pytest.raises(
            ImageError, match=rf"thin.png: 1x60000 pixels; resizing it to {rule.size} px would make over 16,"
        ):
            ImageInput(rule, 3, 0).load(tmp_path, "thin.png", pad=False)
    Image.new("RGB", (20, 2_000), (9, 9, 9)).save(tmp_path / "tall.png")  # a long image within bounds works
    assert load_pixels(tmp_path, "tall.png", 28, pad=True).shape == (3, 28, 28)


def test_outputs_written_through_temporary_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "summary.json", {"a": 1})
        atomic_write_text(tmp_path / "answers.jsonl", "{}\n")
        with atomic_dir(tmp_path / "ckpt") as d:
            (d / "f").write_text("x")
        os.umask(0o077)
        atomic_write_json(tmp_path / "private.json", {})
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "summary.json") == mode(tmp_path / "answers.jsonl") == 0o644
    assert mode(tmp_path / "ckpt") == 0o755 and mode(tmp_path / "private.json") == 0o600


def test_converters_without_arguments_say_one_line_and_help_lists_them(capsys):
    from vlguard_jax.conversion.__main__ import main as convert_main

    for argv, line in (
        (
            [],
            "error: vlguard-convert: choose one of hf-to-flax, flax-to-hf, assemble, minigptv2, flax-to-minigptv2 "
            "(then --help for its flags)",
        ),
        (
            ["assemble"],
            "error: vlguard-convert assemble: the following arguments are required: --llm, "
            "--vision-tower, --projector, --dst",
        ),
        (["hf-to-flax"], "error: vlguard-convert hf-to-flax: the following arguments are required: --src, --dst"),
        (["flax-to-hf"], "error: vlguard-convert flax-to-hf: the following arguments are required: --src, --dst"),
    ):
        assert convert_main(argv) == 2
        assert capsys.readouterr().err == line + "\n"
    assert convert_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"`{c}`" in out for c in ("hf-to-flax", "flax-to-hf", "assemble"))
    # a fresh process too: nothing its imports print comes before the one line
    done = subprocess.run(
        [sys.executable, "-m", "conversion", "assemble"], cwd=REPO, env=run_env(), capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize(
    "flags,line",
    [
        (["--temperature", "nan"], "error: --temperature must be a finite number at least 0 (0: greedy), got nan"),
        (["--temperature", "-1"], "error: --temperature must be a finite number at least 0 (0: greedy), got -1.0"),
        (["--top-p", "0"], "error: --top-p must be in (0, 1] (1: off), got 0.0"),
        (["--top-p", "-1"], "error: --top-p must be in (0, 1] (1: off), got -1.0"),
        (["--top-k", "-5"], "error: --top-k must be at least 0 (0: off), got -5"),
        (
            ["--min-new-tokens", "10", "--max-new-tokens", "3"],
            "error: --min-new-tokens 10 is more than --max-new-tokens 3",
        ),
    ],
)
def test_sampling_flags_out_of_range_are_refused_before_the_model_loads(tmp_path, capsys, flags, line):
    from vlguard_jax.generate.__main__ import main as generate_main

    assert generate_main(["--checkpoint", str(tmp_path / "none"), "--prompt", "hi", *flags]) == 1
    assert error_line(capsys) == line


def test_turns_that_do_not_alternate_name_the_record():
    tok = tiny.tokenizer()
    turns = [{"from": "human", "value": "Q"}, {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]
    with pytest.raises(TokenizationError) as e:
        encode(tok, turns, image_token_index=5, num_image_tokens=2, sample="mix.json: record 'r7'")
    assert str(e.value) == "mix.json: record 'r7': turn 1 is from 'human'; turns must alternate human, gpt"


def test_an_empty_source_is_an_error_not_a_smaller_mix(env):
    ns, tmp = env
    (tmp / "empty.json").write_text("[]")
    c = base_config().data
    c.vlguard, c.vlguard_images = str(tmp / "empty.json"), str(tmp)
    c.llava, c.llava_images, c.helpful_samples = str(ns.sample["helpful"]), str(ns.sample["images"]), 8
    with pytest.raises(RecordError) as e:
        mixture.build(c)
    assert (
        str(e.value) == f"{tmp / 'empty.json'}: no records to train on (data.vlguard, which the posthoc recipe needs)"
    )


# ---- a workdir belongs to one run ------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(env):
    """A workdir whose run has done 2 steps."""
    ns, tmp = env
    c = common.config(ns, tmp / "run", total_steps=2, checkpoint_every=2)
    train(c, log_fn=lambda *_: None)
    return c


@pytest.mark.slow
def test_a_live_workdir_refuses_a_second_run_and_a_stale_lock_is_taken_over(env, trained):
    ns, tmp = env
    c = common.config(ns, tmp / "busy", total_steps=2)
    (tmp / "busy").mkdir()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-12-01 10:00:00"}
    (tmp / "busy" / ".lock").write_text(json.dumps(holder))
    with pytest.raises(WorkdirBusy) as e:
        train(c, log_fn=lambda *_: None)
    assert str(e.value) == (
        f"{tmp / 'busy'}: in use by process {os.getpid()} on {socket.gethostname()} since "
        f"2026-12-01 10:00:00 ({tmp / 'busy' / '.lock'}); wait for that run, or delete the lock "
        "file if it is gone"
    )
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp / "busy" / ".lock").write_text(json.dumps(dict(holder, pid=gone.pid)))
    c.model.checkpoint = str(tmp / "no_such_checkpoint")  # fails right after taking the lock
    logs = []
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint: no model_config.json"):
        train(c, log_fn=logs.append)
    assert logs == [
        f"{tmp / 'busy' / '.lock'}: taking over the stale lock of process {gone.pid} on {socket.gethostname()}"
    ]
    assert not (tmp / "busy" / ".lock").exists()  # released on the way out
    # a new workdir refused before anything was written is not left behind, empty, as if a run were there
    c.workdir = str(tmp / "never")
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint: no model_config.json"):
        train(c, log_fn=lambda *_: None)
    assert not (tmp / "never").exists() and (tmp / "busy").is_dir()


@pytest.mark.slow
def test_a_resume_must_match_the_run(env, trained):
    ns, tmp = env
    c = common.config(ns, tmp / "run", total_steps=1)
    with pytest.raises(ConfigError) as e:
        train(c, log_fn=lambda *_: None)
    assert str(e.value) == (
        f"config.total_steps: 1 is below the 2 steps this workdir's run has done "
        f"({tmp / 'run' / 'checkpoints'}); raise it, or use a new workdir"
    )
    # the base checkpoint is known by content: a copy elsewhere resumes, an altered copy does not
    shutil.copytree(ns.flax_dir, tmp / "copy")
    same = common.config(ns, tmp / "run", total_steps=2, **{"model.checkpoint": str(tmp / "copy")})
    assert train(same, log_fn=lambda *_: None)["step"] == 2
    big = max((p for p in (tmp / "copy" / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(big.read_bytes())
    data[len(data) // 2] ^= 0xFF
    big.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as e:
        train(same, log_fn=lambda *_: None)
    assert str(e.value) == (
        f"{tmp / 'run'}: its run was started with another base checkpoint "
        "(config.model.checkpoint, by content); resume with the same settings, use a new "
        "workdir, or set config.allow_resume_changes=True"
    )
    other_data = tmp / "helpful_edited.json"
    rows = json.loads(ns.sample["helpful"].read_text())
    rows[0]["conversations"][1]["value"] += " Edited."
    other_data.write_text(json.dumps(rows))
    edited = common.config(ns, tmp / "run", total_steps=2, **{"data.llava": str(other_data)})
    with pytest.raises(ConfigError, match=r"another data files' contents \(config.data.vlguard / llava\); "):
        train(edited, log_fn=lambda *_: None)
    edited.allow_resume_changes = True
    logs = []
    assert train(edited, log_fn=logs.append)["step"] == 2
    assert logs[0].startswith(f"warning: resuming {tmp / 'run'} with another data files' contents")


# ---- an evaluation output belongs to one checkpoint and one protocol ---------------------------
def test_an_evaluation_output_is_not_mixed(env, tmp_path, shared_data, capsys):
    ns, tmp = env
    other = tiny.build(tmp_path / "other", seed=3)
    adv = str(shared_data / "advbench" / "harmful_behaviors.csv")

    def evaluate(ckpt, *extra):
        return evaluate_main(
            [
                "--checkpoint",
                str(ckpt),
                "--benchmark",
                "advbench",
                "--data",
                adv,
                "--out",
                str(tmp_path / "out"),
                "--max-new-tokens",
                "2",
                "--limit",
                "2",
                *extra,
            ]
        )

    assert evaluate(ns.flax_dir) == 0
    capsys.readouterr()
    assert evaluate(other.flax_dir) == 1
    side = tmp_path / "out" / "advbench" / "vanilla.run.json"
    assert error_line(capsys) == (
        f"error: {tmp_path / 'out'}: holds answers of {ns.flax_dir} ({side}); this run "
        f"evaluates {other.flax_dir}, another checkpoint. Use another --out"
    )
    assert evaluate(ns.flax_dir, "--min-new-tokens", "0") == 1
    assert error_line(capsys) == (
        f"error: {tmp_path / 'out' / 'advbench' / 'vanilla.json'}: its responses were "
        "generated with other settings (min_new_tokens 1 there, 0 now); use another "
        "--out, or the same settings to resume"
    )


# ---- converters never write a lie ---------------------------------------------------------------
def test_converters_refuse_a_config_that_disagrees_and_their_own_input(env, tmp_path, capsys):
    ns, _ = env
    bad = tmp_path / "bad"
    shutil.copytree(ns.flax_dir, bad)
    cfg = json.loads((bad / "model_config.json").read_text())
    cfg["text"]["intermediate_size"] += 8
    (bad / "model_config.json").write_text(json.dumps(cfg))
    assert flax_to_hf_main(["--src", str(bad), "--dst", str(tmp_path / "hf")]) == 1
    assert error_line(capsys) == (
        f"error: {bad}: tensor language_model/layers_0/mlp/down_proj/kernel has shape "
        "(40, 48), but model_config.json gives (48, 48)"
    )
    assert not (tmp_path / "hf").exists()
    assert flax_to_hf_main(["--src", str(ns.flax_dir), "--dst", str(ns.flax_dir / "inside")]) == 1
    assert error_line(capsys) == (
        f"error: {ns.flax_dir / 'inside'}: the output would overwrite or sit inside the "
        f"input {ns.flax_dir}; write elsewhere"
    )
    (tmp_path / "exists").mkdir()
    assert hf_to_flax_main(["--src", str(ns.hf_dir), "--dst", str(tmp_path / "exists")]) == 1
    assert error_line(capsys) == (
        f"error: {tmp_path / 'exists'} already exists; choose a new destination (or pass --overwrite)"
    )
    assert hf_to_flax_main(["--src", str(ns.hf_dir), "--dst", str(tmp_path / "exists"), "--overwrite"]) == 0
    assert (tmp_path / "exists" / "model_config.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exists")]


def test_data_commands_never_write_over_input_or_output(env, tmp_path, capsys, shared_data):
    ns, _ = env
    train_json = shared_data / "vlguard" / "train.json"
    assert convert_vlguard_main(["--src", str(train_json), "--dst", str(train_json)]) == 1
    assert error_line(capsys) == (
        f"error: {train_json}: the output would overwrite or sit inside the input {train_json}; write elsewhere"
    )
    (tmp_path / "llava.json").write_text("[]")
    assert convert_vlguard_main(["--src", str(train_json), "--dst", str(tmp_path / "llava.json")]) == 1
    assert error_line(capsys) == (
        f"error: {tmp_path / 'llava.json'} already exists; choose a new destination (or pass --overwrite)"
    )
    assert sample_main(["--dst", str(ns.sample["train"].parent)]) == 1
    assert error_line(capsys) == (
        f"error: {ns.sample['train']} already exists; choose a new --dst (or pass --overwrite)"
    )
    responses = tmp_path / "unsafes.json"
    responses.write_text(json.dumps({"a.png": "I'm sorry."}))
    assert evaluate_main(["score", "--responses", str(responses)]) == 0
    capsys.readouterr()
    assert evaluate_main(["score", "--responses", str(responses)]) == 1
    assert error_line(capsys) == (
        f"error: {tmp_path / 'unsafes.scored.json'} already exists; choose a new destination (or pass --overwrite)"
    )


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_nothing(env, tmp_path):
    """RLIMIT_FSIZE makes every write past 64 KB fail as a full disk would (EFBIG)."""
    ns, _ = env
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))\n"
        "from vlguard_jax.conversion.hf_to_flax import main\n"
        f"sys.exit(main(['--src', {str(ns.hf_dir)!r}, '--dst', {str(tmp_path / 'out')!r}, '--dtype', 'float32']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO, env=run_env()
    )
    assert out.returncode == 1, out.stderr[-3000:]
    lines = [x for x in out.stderr.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "File too large" in lines[0] or "too large" in lines[0].lower(), lines[0]
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_sibling_writes_that_fail_with_the_first_are_not_echoed(capsys, caplog):
    """orbax writes arrays in concurrent tasks; when the disk fills, the ones never awaited fail too
    and asyncio would log each with a traceback when collected, after the command's one line."""

    async def _open_and_write():  # the name orbax's array writes carry
        raise OSError(errno.EFBIG, "File too large")

    async def save():
        first, sibling = asyncio.ensure_future(_open_and_write()), asyncio.ensure_future(_open_and_write())
        opening = asyncio.get_running_loop().create_future()  # tensorstore opening a sibling's store
        opening.set_exception(ValueError("PERMISSION_DENIED: Error opening \"zarr\" driver [tensorstore_spec='{}']"))
        await asyncio.sleep(0)
        del sibling, opening
        await first

    def main(argv):
        asyncio.run(save())

    assert cli(main)([]) == 1
    gc.collect()
    assert capsys.readouterr().err.splitlines() == ["error: [Errno 27] File too large"]
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


# ---- generation limits ------------------------------------------------------------------------
def test_generation_limits(env, monkeypatch):
    ns, _ = env
    gen, m = load_generator(ns.flax_dir, batch_size=2)
    positions = m.config.text.max_position_embeddings
    with pytest.raises(ValueError) as e:
        gen([[1] * (positions - 3), [1, 2]], [None, None], Sampling(max_new_tokens=4))
    assert str(e.value) == (
        f"prompt 0: {positions - 3} tokens plus 4 new ones exceed the model's {positions} "
        "positions; shorten it or lower max_new_tokens"
    )

    def exhausted(*a, **k):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.00GiB")

    monkeypatch.setattr(gen, "_fn", lambda sampling: exhausted)
    with pytest.raises(ResourceError) as e:
        gen([[1, 2, 3]], [None], Sampling(max_new_tokens=4))
    assert str(e.value) == (
        "out of device memory generating a batch of 2 prompts of up to 64 tokens plus 4 new ones; "
        "lower the batch size (--batch-size 1)"
    )


# ---- process hygiene -----------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_checkpoints_and_stops_training_and_its_data_workers(env):
    """Images decoded in grain worker processes: a decompression bomb among them is skipped and
    listed; SIGTERM (a preemption notice) then checkpoints the step and stops the run, and no
    worker outlives it."""
    ns, tmp = env
    rows = json.loads(ns.sample["helpful"].read_text())
    bomb = png_header(ns.sample["images"] / "bomb.png", 100_000, 100_000)
    with_image = [r for r in rows if "image" in r]
    with_image[0]["image"] = "bomb.png"
    (tmp / "bombed.json").write_text(json.dumps(rows))
    cfg = config_file(
        ns,
        tmp,
        "term",
        total_steps=400,
        checkpoint_every=0,
        **{
            "data.workers": 2,
            "data.on_bad_record": "skip",
            "data.recipe": "llava",
            "data.llava": str(tmp / "bombed.json"),
            "data.group_by_modality": False,
        },
    )
    workdir = tmp / "term"
    proc = subprocess.Popen(
        train_cmd(cfg, workdir), env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        bad = workdir / "bad_records.jsonl"
        deadline = time.time() + 240
        while time.time() < deadline and not (
            (workdir / "metrics.jsonl").exists() and bad.exists() and "bomb" in bad.read_text()
        ):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.5)
        assert (workdir / "metrics.jsonl").exists(), "training did not reach the bomb"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the data workers are child processes"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        # (at exit, multiprocessing's resource tracker may still report and free grain's shared memory)
        assert proc.returncode == 0 and "Traceback" not in err and "error:" not in err, err[-3000:]
        step = int(out.split("preempted at step ")[1].split(":")[0])
        assert (workdir / "checkpoints" / str(step)).is_dir()
        time.sleep(1)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not (workdir / ".lock").exists()
        reported = [json.loads(x) for x in (workdir / "bad_records.jsonl").read_text().splitlines()]
        assert any(f"{bomb}: over the pixel limit, refused before decoding" in r["reason"] for r in reported)
    finally:
        if proc.poll() is None:
            proc.kill()
        bomb.unlink()  # the sample's image root is shared by the module's tests


def test_a_checkpoint_write_that_fails_stops_the_run_at_once_and_a_rerun_resumes(env, monkeypatch, capsys):
    """The store fails under checkpoint 2's write: the run stops with one line naming that step,
    not at its last step with tracebacks, and the same command then resumes from step 1."""
    from tests.checkpoints.test_training import failing_at
    from vlguard_jax.checkpoints.training import CheckpointWriteError

    ns, tmp = env
    c = common.config(ns, tmp / "lost", total_steps=6, checkpoint_every=1)
    failing_at(2, monkeypatch)
    with pytest.raises(CheckpointWriteError, match=r"checkpoints/2: the checkpoint of step 2 could not be written"):
        train(c, log_fn=lambda *_: None)
    steps = [json.loads(x)["step"] for x in (tmp / "lost" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) < 6, "the run went on training past the lost checkpoint"
    monkeypatch.undo()
    assert train(c, log_fn=lambda *_: None)["step"] == 6  # resumed over the partial step 2
