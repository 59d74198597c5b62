"""The training command line, shared by `python -m vlguard_jax.train` and the demo:
`--config FILE` (a big_vision-style `get_config()` file, or the name of one in `configs/`; `FILE:ARG`
calls `get_config(ARG)`, as in `--config paper:7b,lora,posthoc`) with
`--config.KEY=VALUE` overrides. A
misspelt key, a file that does not load or a value of the wrong type is a `ConfigError` naming it.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from absl import flags
from ml_collections import ConfigDict, config_flags

from vlguard_jax.errors import ConfigError, UsageError
from vlguard_jax.train.defaults import base_config

OVERRIDE = re.compile(r"--config\.([\w.]+)(=|$)")


def flat_keys(cfg, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        if hasattr(v, "items"):
            out += flat_keys(v, f"{prefix}{k}.")
        else:
            out.append(prefix + k)
    return out


def unknown_key(key: str, known: list[str]) -> ConfigError:
    """The error for a key the config lacks, with the closest key that exists."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean config.{close[0]}?" if close else ""
    return ConfigError(f"config.{key}: no such key{hint}")


def split_spec(spec: str) -> tuple[str, str | None]:
    """`FILE` or `FILE:ARG` (ARG passed to get_config, as ml_collections' config_flags does); a
    file whose path holds a colon (`runs/2024-05-01T10:00/cfg.py`) is taken whole."""
    if Path(spec).is_file():
        return spec, None
    if ".py:" in spec:
        i = spec.rindex(".py:") + 3
        return spec[:i], spec[i + 1 :]
    path, sep, arg = spec.partition(":")
    return path, (arg if sep else None)


def load_config_file(spec: str) -> ConfigDict:
    """The config a file's get_config() (or get_config(ARG), for `FILE:ARG`) returns; a file that
    fails to load names itself."""
    path, arg = split_spec(spec)
    loader = importlib.util.spec_from_file_location("vlguard_user_config", path)
    if loader is None or loader.loader is None or not Path(path).is_file():
        raise ConfigError(f"--config {path}: no such config file")
    module = importlib.util.module_from_spec(loader)
    try:
        loader.loader.exec_module(module)
        return module.get_config() if arg is None else module.get_config(arg)
    except ConfigError:
        raise
    except Exception as e:  # the user's file: any exception is its own
        raise ConfigError(f"--config {spec}: cannot load it ({type(e).__name__}: {e})") from None


def config_path(args: list[str]) -> str | None:
    path = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
    if path is None and "--config" in args[:-1]:
        path = args[args.index("--config") + 1]
    return path


def find_config(spec: str) -> str:
    """A config file by path, or by the name of one shipped in `configs/` (`posthoc_lora_7b`, or
    `paper:7b,lora,posthoc` with its argument), so that an installed package finds its configs
    outside the repository."""
    name, arg = split_spec(spec)
    if Path(name).is_file() or "/" in name or os.sep in name:
        return spec
    shipped = resources.files("configs") / (name if name.endswith(".py") else f"{name}.py")
    if not shipped.is_file():
        raise ConfigError(f"--config {name}: neither a file nor a shipped config; those are {shipped_configs()}")
    return str(shipped) if arg is None else f"{shipped}:{arg}"


def shipped_configs() -> list[str]:
    return sorted(
        p.name[:-3]
        for p in resources.files("configs").iterdir()
        if p.name.endswith(".py") and not p.name.startswith("_")
    )


def program(argv0: str, module: str) -> str:
    """The command as the user typed it: the console script's name, or `python -m MODULE`."""
    name = os.path.basename(argv0)
    return name if name.startswith("vlguard-") else f"python -m {module}"


def help_text(prog: str, summary: str, default: str | None) -> str:
    """`--help`: usage, the shipped configs and every `--config.KEY` group with its keys."""
    base = load_config_file(find_config(default)) if default else base_config()
    config = "[--config NAME_OR_FILE]" if default else "--config NAME_OR_FILE"
    lines = [
        f"usage: {prog} {config} [--config.KEY=VALUE ...]",
        *(["", summary] if summary else []),
        "",
        f"--config: a file with get_config(), or a shipped config's name{f' (default: {default})' if default else ''}:",
        "  " + ", ".join(shipped_configs()),
        "--config.KEY=VALUE overrides one setting; the keys, by group:",
    ]
    top = [k for k, v in base.items() if not isinstance(v, ConfigDict)]
    lines.append("  " + ", ".join(top))
    lines += [f"  {k}.{{{', '.join(v.keys())}}}" for k, v in base.items() if isinstance(v, ConfigDict)]
    return "\n".join(lines)


def parse(
    argv: list[str], default: str | None = None, module: str = "vlguard_jax.train", summary: str = ""
) -> ConfigDict:
    """argv (program name first) -> the config, its overrides applied. `default` is the config
    file when argv names none. `-h`/`--help` prints the help and exits 0."""
    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv[1:]):
        print(help_text(program(argv[0], module), summary, default))
        raise SystemExit(0)
    path = config_path(argv[1:])
    if path is None:
        if default is None:
            raise UsageError(
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
    known = flat_keys(load_config_file(path))
    for arg in argv[1:]:
        m = OVERRIDE.match(arg)
        if m and m[1] not in known:
            raise unknown_key(m[1], known)
    file, spec_arg = split_spec(path)
    link = None
    if ":" in file:  # ml_collections cuts --config at its first colon: give it a path without one
        link = Path(tempfile.mkdtemp(prefix="vlguard-config-"))
        (link / Path(file).name).symlink_to(Path(file).resolve())
        path = str(link / Path(file).name) + (f":{spec_arg}" if spec_arg is not None else "")
    argv.insert(1, f"--config={path}")
    saved, sys.argv = sys.argv, argv  # ml_collections finds the --config.KEY overrides in sys.argv
    try:
        # Flags of its own per parse: absl's global FLAGS would keep each --config.KEY defined,
        # and a second parse in the process (a notebook, the demo after a run) would refuse it.
        values = flags.FlagValues()
        config = config_flags.DEFINE_config_file(
            "config", None, "a config file with get_config()", flag_values=values, lock_config=True
        )
        rest = values(argv)
        if not flags.FLAGS.is_parsed():  # libraries' own absl flags (grain's workers read them): defaults
            flags.FLAGS.mark_as_parsed()
    except flags.Error as e:
        raise ConfigError(" ".join(str(e).split())) from None
    finally:
        sys.argv = saved
        if link is not None:
            shutil.rmtree(link, ignore_errors=True)
    if len(rest) > 1:
        raise UsageError(f"unexpected arguments: {rest[1:]}")
    return config.value
