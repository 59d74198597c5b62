"""The installed package (`pip install .[test]`, as .ci/run does) works outside the repository:
console scripts, configs by name, and the package data. Run from a directory where the
repository's own copies cannot shadow the installed ones."""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def installed() -> bool:
    try:
        dist = importlib.metadata.distribution("vlguard-jax")
    except importlib.metadata.PackageNotFoundError:
        return False
    direct = dist.read_text("direct_url.json")
    return not (direct and json.loads(direct).get("dir_info", {}).get("editable"))


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not installed(), reason="vlguard-jax is not installed (non-editable): pip install .[test], as .ci/run does"
    ),
]
BIN = Path(sys.executable).parent


def outside(tmp_path, *cmd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(list(cmd), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_the_installed_copy_is_the_one_imported_outside_the_repository(tmp_path):
    out = outside(
        tmp_path,
        sys.executable,
        "-c",
        "import configs, conversion, vlguard_jax; print(vlguard_jax.__file__, configs.__file__)",
    )
    assert out.returncode == 0, out.stderr
    assert all(not Path(f).is_relative_to(REPO) for f in out.stdout.split()), out.stdout
    # The benchmarks live in the repository only: no command needs them.
    out = outside(tmp_path, sys.executable, "-c", "import benchmarks")
    assert out.returncode == 1 and "No module named 'benchmarks'" in out.stderr, out.stderr


def test_console_scripts_and_configs_by_name(tmp_path):
    for script in ("vlguard-train", "vlguard-evaluate", "vlguard-generate", "vlguard-convert", "vlguard-demo"):
        assert (BIN / script).is_file(), script
    out = outside(tmp_path, str(BIN / "vlguard-train"), "--config", "posthoc_lora_7b", "--config.optim.lrr=1")
    assert out.returncode == 1 and "config.optim.lrr" in out.stderr and "config.optim.lr" in out.stderr, out.stderr
    out = outside(tmp_path, str(BIN / "vlguard-train"), "--config", "posthoc_lora_7b", "--config.total_steps=x")
    assert out.returncode == 1 and "--config.total_steps=x: invalid literal for int()" in out.stderr, out.stderr
    out = outside(tmp_path, str(BIN / "vlguard-train"), "--config", "posthoc_lora_8b")
    assert out.returncode == 1 and "posthoc_lora_7b" in out.stderr, out.stderr  # the shipped names are listed
    out = outside(tmp_path, str(BIN / "vlguard-convert"), "hf-to-flax", "--help")
    assert out.returncode == 0 and "--src" in out.stdout, out.stderr
    out = outside(tmp_path, str(BIN / "vlguard-convert"))
    assert out.returncode == 2 and "hf-to-flax, flax-to-hf, assemble" in out.stderr
    out = outside(tmp_path, str(BIN / "vlguard-evaluate"), "--help")
    assert out.returncode == 0 and "--benchmark" in out.stdout, out.stderr
    for script in ("vlguard-train", "vlguard-demo"):  # usage names the script the user typed
        out = outside(tmp_path, str(BIN / script), "--help")
        assert out.returncode == 0 and out.stdout.startswith(f"usage: {script} "), (script, out.stdout, out.stderr)
        assert "posthoc_lora_7b" in out.stdout and "optim.{" in out.stdout, out.stdout


def test_package_data_is_installed(tmp_path):
    out = outside(
        tmp_path,
        sys.executable,
        "-c",
        "from importlib import resources; "
        "print(sorted(p.name for p in resources.files('configs').iterdir() if p.name.endswith('.py')))",
    )
    assert out.returncode == 0, out.stderr
    shipped = sorted(p.name for p in (REPO / "configs").glob("*.py"))
    assert out.stdout.strip() == str(shipped)
