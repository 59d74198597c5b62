"""Every command answers `--help` and a mistyped flag before it loads its library: jax, flax,
orbax, grain and transformers are made unimportable, and each command still prints its usage
(exit 0) or its one `error:` line (exit 2). The times are in BENCHMARKS.md ("Start-up")."""

import subprocess
import sys

import pytest

HEAVY = ("jax", "flax", "orbax", "grain", "transformers", "torch")
# (module run as `python -m`, arguments before the flag)
COMMANDS = [
    ("vlguard_jax.train", []),
    ("vlguard_jax.demo", []),
    ("vlguard_jax.generate", []),
    ("vlguard_jax.evaluate", []),
    *[("vlguard_jax.evaluate", [sub]) for sub in ("score", "vqa", "suite", "report")],
    ("vlguard_jax.evaluate", ["score", "--benchmark", "pope"]),
    ("vlguard_jax.data.screen", []),
    ("vlguard_jax.conversion", []),
    *[
        ("vlguard_jax.conversion", [c])
        for c in ("hf-to-flax", "flax-to-hf", "assemble", "minigptv2", "flax-to-minigptv2")
    ],
]


def run_light(module: str, args: list[str]) -> subprocess.CompletedProcess:
    """`python -m module args` with the heavy libraries unimportable (a None in sys.modules)."""
    code = (
        "import runpy, sys\n"
        f"for name in {HEAVY!r}: sys.modules[name] = None\n"
        f"sys.argv = [{module!r}, *{args!r}]\n"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("module,args", COMMANDS, ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_help_loads_no_library(module, args):
    r = run_light(module, [*args, "--help"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("usage:"), r.stdout[:300]


@pytest.mark.parametrize("module,args", COMMANDS, ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_a_mistyped_flag_loads_no_library(module, args):
    flag = "--config.optim.lrr=1" if module in ("vlguard_jax.train", "vlguard_jax.demo") else "--no-such-flag"
    r = run_light(module, [*args, flag])
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_check_sees_a_heavy_import():
    """The harness itself: a command whose flags parse goes on to load its library, and fails."""
    r = run_light("vlguard_jax.generate", ["--checkpoint", "ck", "--prompt", "hi"])
    assert r.returncode != 0 and "import of jax halted" in r.stderr, r.stderr[-2000:]
