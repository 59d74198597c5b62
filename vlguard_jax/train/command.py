"""The training command line, shared by `python -m vlguard_jax.train` and the demo:
`--config FILE` (a big_vision-style `get_config()` file, or the name of one in `configs/`) with
`--config.KEY=VALUE` overrides. A
misspelt key, a file that does not load or a value of the wrong type is a `ConfigError` naming it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from importlib import resources
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from vlguard_jax.errors import ConfigError
from vlguard_jax.train.validate import flat_keys, unknown_key

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file with get_config()", lock_config=True)
OVERRIDE = re.compile(r"--config\.([\w.]+)(=|$)")


def load_config_file(path: str):
    """The config a file's get_config() returns; a file that fails to load names itself."""
    spec = importlib.util.spec_from_file_location("vlguard_user_config", path)
    if spec is None or spec.loader is None or not Path(path).is_file():
        raise ConfigError(f"--config {path}: no such config file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        return module.get_config()
    except Exception as e:  # the user's file: any exception is its own
        raise ConfigError(f"--config {path}: cannot load it ({type(e).__name__}: {e})") from None


def config_path(args: list[str]) -> str | None:
    path = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
    if path is None and "--config" in args[:-1]:
        path = args[args.index("--config") + 1]
    return path


def find_config(name: str) -> str:
    """A config file by path, or by the name of one shipped in `configs/` (`posthoc_lora_7b`), so
    that an installed package finds its configs outside the repository."""
    if Path(name).is_file() or "/" in name or os.sep in name:
        return name
    shipped = resources.files("configs") / (name if name.endswith(".py") else f"{name}.py")
    if not shipped.is_file():
        known = sorted(
            p.name[:-3]
            for p in resources.files("configs").iterdir()
            if p.name.endswith(".py") and not p.name.startswith("_")
        )
        raise ConfigError(f"--config {name}: neither a file nor a shipped config; those are {known}")
    return str(shipped)


def parse(argv: list[str], default: str | None = None):
    """argv (program name first) -> the config, its overrides applied. `default` is the config
    file when argv names none."""
    argv = list(argv)
    path = config_path(argv[1:])
    if path is None:
        if default is None:
            raise ConfigError(
                "--config: required (a config file such as configs/posthoc_lora_7b.py, or its name: posthoc_lora_7b)"
            )
        path = default
    else:
        argv = [
            a
            for i, a in enumerate(argv)
            if not (a.startswith("--config=") or a == "--config" or (i > 0 and argv[i - 1] == "--config"))
        ]
    path = find_config(path)
    argv.insert(1, f"--config={path}")
    known = flat_keys(load_config_file(path))
    for arg in argv[1:]:
        m = OVERRIDE.match(arg)
        if m and m[1] not in known:
            raise unknown_key(m[1], known)
    saved, sys.argv = sys.argv, argv  # ml_collections finds the --config.KEY overrides in sys.argv
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        raise ConfigError(" ".join(str(e).split())) from None
    finally:
        sys.argv = saved
    if len(rest) > 1:
        raise ConfigError(f"unexpected arguments: {rest[1:]}")
    return _CONFIG.value
