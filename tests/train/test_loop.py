"""The whole run through `python -m vlguard_jax.train`: loss falls, logs, kill -9 and resume
bit for bit, NaN stops the run, two processes equal one, misspelt keys fail."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

from tests.train import common
from vlguard_jax import sharding, storage

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop")
    return common.setup(tmp), tmp


def config_file(ns, tmp: Path, name: str, **overrides) -> Path:
    """A config file for the CLI that rebuilds tests.train.common.config with these values."""
    path = tmp / f"{name}.py"
    model = {k: str(v) for k, v in vars(ns).items() if k in ("flax_dir",)}
    sample = {k: str(v) for k, v in ns.sample.items()}
    path.write_text(
        "from types import SimpleNamespace\nfrom pathlib import Path\nfrom tests.train import common\n\n"
        "def get_config():\n"
        f"    ns = SimpleNamespace(flax_dir={model['flax_dir']!r}, sample={{k: Path(v) for k, v in {sample!r}.items()}})\n"
        f"    return common.config(ns, '', **{overrides!r})\n"
    )
    return path


def train_cmd(cfg_path, workdir, *extra):
    return [sys.executable, "-m", "vlguard_jax.train", f"--config={cfg_path}", f"--config.workdir={workdir}", *extra]


def run_env(**extra):
    # Runs of the same program share compiled executables (the cache directory set in conftest).
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        JAX_PLATFORMS="cpu",
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    env.update(extra)
    return env


def final_params(workdir):
    from vlguard_jax.checkpoints.runs import read_latest

    step, state, _ = read_latest(workdir)
    return step, jax.tree.leaves(jax.tree.map(np.asarray, state["params"]))


def metrics(workdir):
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_and_logs_are_written(env, monkeypatch):
    ns, tmp = env
    cfg = config_file(ns, tmp, "falls", total_steps=24, checkpoint_every=12, **{"train.mode": "full", "optim.lr": 3e-3})
    # A workdir relative to the current directory, as in the README's commands (orbax itself
    # takes absolute paths only).
    out = subprocess.run(train_cmd(cfg, "falls"), env=run_env(), capture_output=True, text=True, timeout=600, cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    monkeypatch.chdir(tmp)
    assert final_params("falls")[0] == 24
    m = metrics(tmp / "falls")
    assert [x["step"] for x in m] == list(range(1, 25))
    first, last = np.mean([x["loss"] for x in m[:3]]), np.mean([x["loss"] for x in m[-3:]])
    assert last < 0.8 * first, (first, last)
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu"} <= set(m[0])
    assert list((tmp / "falls" / "tensorboard").glob("events.out.tfevents.*"))
    log = out.stdout + out.stderr
    assert "trainable" in log and "mesh" in log and "vlguard: 64 (safe 32, unsafe 32)" in log
    ckpts = sorted(p.name for p in (tmp / "falls" / "checkpoints").iterdir() if p.name.isdigit())
    assert ckpts == ["12", "24"]


@pytest.fixture(scope="module")
def reference(env):
    """An uninterrupted 8-step run (LoRA dropout on, so the rng state matters; layers scanned, as
    for the paper's models) and its config."""
    ns, tmp = env
    kw = dict(total_steps=8, checkpoint_every=2, keep_checkpoints=3, **{"lora.dropout": 0.1, "model.scan_layers": "on"})
    cfg = config_file(ns, tmp, "resume", **kw)
    ref = subprocess.run(
        train_cmd(cfg, tmp / "ref"), env=run_env(), capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    return cfg, tmp / "ref"


def assert_same_run(ref, work):
    step_a, a = final_params(ref)
    step_b, b = final_params(work)
    assert step_a == step_b == 8
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    la = [x["loss"] for x in metrics(ref)]
    lb = {x["step"]: x["loss"] for x in metrics(work)}
    assert all(lb[s] == la[s - 1] for s in lb)


def test_kill_and_resume_is_bit_exact(env, reference):
    ns, tmp = env
    cfg, ref = reference
    # Kill -9 as soon as anything of the step-4 checkpoint appears (usually mid-write), then restart.
    work = tmp / "killed"
    for trigger in ("4",):
        proc = subprocess.Popen(
            train_cmd(cfg, work), env=run_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 300
        ck = work / "checkpoints"
        while time.time() < deadline and proc.poll() is None:
            if ck.exists() and any(p.name.startswith(trigger) for p in ck.iterdir()):
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(train_cmd(cfg, work), env=run_env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout + done.stderr
    assert_same_run(ref, work)


def test_sigterm_checkpoints_the_step_and_a_restart_is_bit_exact(env, reference):
    """A preemption notice: the run finishes its step, checkpoints it (between the every-2-steps
    ones, often), exits 0; the same command then ends where an uninterrupted run ends."""
    ns, tmp = env
    cfg, ref = reference
    work = tmp / "preempted"
    proc = subprocess.Popen(
        train_cmd(cfg, work), env=run_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (work / "metrics.jsonl").exists() and len((work / "metrics.jsonl").read_text().splitlines()) >= 1:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    step = int(out.split("preempted at step ")[1].split(":")[0])
    assert 1 <= step < 8 and (work / "checkpoints" / str(step)).is_dir()
    done = subprocess.run(train_cmd(cfg, work), env=run_env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {work / 'checkpoints'} at step {step}" in done.stdout
    assert_same_run(ref, work)


def test_a_checkpoint_resumes_in_the_other_layer_form(env):
    """Checkpoints hold the layers in the form the run used. A run resumed with the other
    `model.scan_layers` converts the state at restore (both ways) and goes on as a run that
    never changed form would, LoRA dropout on at the paper's 0.05 (both forms draw its masks
    alike)."""
    from vlguard_jax.checkpoints.runs import load_run, read_latest
    from vlguard_jax.models.stacking import is_stacked
    from vlguard_jax.train.loop import run

    ns, tmp = env
    kw = dict(total_steps=4, checkpoint_every=1, keep_checkpoints=4, **{"lora.dropout": 0.05})
    cfg = lambda work, form: common.config(ns, work, **kw, **{"model.scan_layers": form})
    run(cfg(tmp / "form_ref", "off"), log_fn=lambda _: None)
    work = tmp / "form_mixed"
    shutil.copytree(tmp / "form_ref", work)  # its checkpoints 1-4, written unrolled
    for form, drop, resumed_at in (("on", ("3", "4"), 2), ("off", ("4",), 3)):
        for step in drop:
            shutil.rmtree(work / "checkpoints" / step)
        said = []
        run(cfg(work, form), log_fn=said.append)
        assert (
            f"checkpoint {resumed_at} holds the decoder layers {'per layer' if form == 'on' else 'stacked'}; "
            f"converted for config.model.scan_layers='{form}'" in said
        )
        assert is_stacked(read_latest(work)[1]["params"]) == (form == "on")
    # Step 3 ran scanned, step 4 unrolled again: a misplaced layer or moment would show.
    plain, mixed = ({x["step"]: x["loss"] for x in metrics(path)} for path in (tmp / "form_ref", work))
    assert sorted(mixed) == [1, 2, 3, 4]
    np.testing.assert_allclose([mixed[k] for k in range(1, 5)], [plain[k] for k in range(1, 5)], rtol=1e-5)
    # Exports read every run per layer (runs.load_run, under flax_to_hf and the PEFT export).
    a, b = load_run(tmp / "form_ref")[2], load_run(work, step=3)[2]
    assert a.keys() == b.keys() and ("language_model", "layers_1", "self_attn", "q_proj", "lora_a") in b
    a, b = load_run(tmp / "form_ref")[2], load_run(work)[2]
    for path, x in a.items():
        np.testing.assert_allclose(b[path], x, rtol=1e-4, atol=1e-6, err_msg="/".join(path))


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(env):
    ns, tmp = env
    cfg = config_file(
        ns,
        tmp,
        "nan",
        total_steps=6,
        checkpoint_every=1,
        **{"train.mode": "full", "optim.lr": 1e30, "optim.warmup_ratio": 0.0},
    )
    out = subprocess.run(
        train_cmd(cfg, tmp / "nan"), env=run_env(), capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert out.returncode != 0
    msg = out.stderr[-4000:]
    assert "non-finite loss" in msg and "stopped" in msg, msg
    step, params = final_params(tmp / "nan")
    assert step >= 1 and all(np.isfinite(p).all() for p in params)
    assert f"The last good checkpoint is {step}" in msg


def test_misspelt_config_key_is_an_error(env):
    ns, tmp = env
    cfg = config_file(ns, tmp, "typo")
    out = subprocess.run(
        train_cmd(cfg, tmp / "typo", "--config.optim.learning_rate=1"),
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert out.returncode != 0 and "learning_rate" in out.stderr
    assert not (tmp / "typo" / "checkpoints").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_two(cfg, workdir, env_of=lambda i: run_env()):
    """Two processes on localhost, one device each; `env_of(i)` is process i's environment."""
    port = free_port()
    jax_env = dict(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2")
    return [
        subprocess.Popen(
            train_cmd(cfg, workdir),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env_of(i), **jax_env, JAX_PROCESS_ID=str(i)),
        )
        for i in range(2)
    ]


def finish(procs) -> list[tuple[str, str]]:
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    return outs


def preempt_process_1(procs, workdir, poll: float = 0.005) -> int:
    """Once the run has logged a step, a preemption notice to process 1 alone; both processes
    finish (exit 0). Returns the step they checkpointed, as process 0 reports it."""
    log = storage.as_path(f"{workdir}/metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if log.exists() and log.read_text().strip():
            break
        time.sleep(poll)
    procs[1].send_signal(signal.SIGTERM)
    outs = finish(procs)
    return int(outs[0][0].split("preempted at step ")[1].split(":")[0])


@pytest.fixture(scope="module")
def two_processes(env):
    """An uninterrupted run of two processes on localhost (one device each): its config, workdir
    and output; the reference of both tests below."""
    ns, tmp = env
    cfg = config_file(ns, tmp, "multi", total_steps=10, checkpoint_every=100, **{"mesh.shape": (-1, 1, 1)})
    outs = finish(start_two(cfg, tmp / "two_ref"))
    return cfg, tmp / "two_ref", outs


@pytest.mark.multiprocess
def test_two_processes_match_one(env, two_processes):
    ns, tmp = env
    cfg, two, outs = two_processes
    one = subprocess.run(
        train_cmd(cfg, tmp / "one"),
        env=run_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    assert "2 process(es)" in outs[0][0] + outs[0][1]
    l1 = [x["loss"] for x in metrics(tmp / "one")]
    l2 = [x["loss"] for x in metrics(two)]
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    _, a = final_params(tmp / "one")
    _, b = final_params(two)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


@pytest.mark.multiprocess
def test_two_processes_preempted_on_one_host_resume_bit_exact(env, two_processes):
    """A notice on process 1 alone: both processes checkpoint the same step (JAX's preemption sync
    point) and exit 0; the restart ends where an uninterrupted two-process run ends."""
    ns, tmp = env
    cfg, two_ref, _ = two_processes
    work = tmp / "two_pre"
    step = preempt_process_1(start_two(cfg, work), work)
    assert 1 <= step < 10 and (work / "checkpoints" / str(step)).is_dir()
    finish(start_two(cfg, work))
    _, a = final_params(two_ref)
    _, b = final_params(work)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert [x["loss"] for x in metrics(two_ref)][step:] == [x["loss"] for x in metrics(work)][step:]


def test_a_checkpoint_with_its_own_lora_trains_from_its_factors(tmp_path):
    """A MiniGPT-v2 converted with --lora keep: the run's LoRA starts from the checkpoint's factors
    (the authors' stage 3), llama_proj trains at the projector's rate, the tower and ln_vision stay
    frozen; a run whose LoRA is not the checkpoint's is refused naming config.lora."""
    from tests.minigptv2_reference import write_parts
    from vlguard_jax.conversion.minigptv2 import convert
    from vlguard_jax.errors import ConfigError
    from vlguard_jax.train.config import RunConfig
    from vlguard_jax.train.loop import build_params

    parts = write_parts(tmp_path)
    convert(parts.llm, parts.eva, parts.ckpt, tmp_path / "ck", dtype="float32", log=lambda _: None)
    c = RunConfig().to_config()
    c.model.checkpoint, c.model.dtype, c.model.attn_impl, c.model.remat = str(tmp_path / "ck"), "float32", "xla", "none"
    c.lora.rank, c.lora.alpha, c.lora.targets = 64, 16.0, ("q_proj", "v_proj")
    mesh = sharding.make_mesh((1, 1, 1))
    start = build_params(RunConfig.from_config(c), mesh)
    assert set(start.trainable) == {"llama_proj", "language_model"}
    assert set(start.frozen) >= {"vision_tower", "ln_vision", "language_model"}
    a = np.asarray(start.trainable["language_model"]["layers_1"]["self_attn"]["v_proj"]["lora_a"])
    theirs = torch.load(parts.ckpt, weights_only=True)["model"]
    factor = theirs["llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"].numpy()
    np.testing.assert_array_equal(a, factor.T)  # the authors' factor, not a fresh draw
    c.lora.rank = 32
    with pytest.raises(ConfigError, match=r"config.lora: rank 32, alpha 16.0 .* carries LoRA factors of rank 64"):
        build_params(RunConfig.from_config(c), mesh)


def test_lora_targets_are_the_familys(env, monkeypatch):
    """A family says which decoder projections LoRA may wrap (`Family.lora_targets`); a config
    asking for another is refused before anything is built or written."""
    import dataclasses

    from vlguard_jax import families
    from vlguard_jax.errors import ConfigError
    from vlguard_jax.train.loop import run

    ns, tmp = env
    narrow = dataclasses.replace(families.LLAVA, lora_targets=("q_proj", "v_proj"))
    monkeypatch.setitem(families.FAMILIES, "llava", narrow)
    cfg = common.config(ns, tmp / "narrow")
    with pytest.raises(ConfigError, match=r"config.lora.targets: a LLaVA has no LoRA target 'k_proj' \(its targets"):
        run(cfg, log_fn=lambda _: None)
    assert not (tmp / "narrow").exists()
