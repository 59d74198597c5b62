"""The flags several commands share and the values they take, importable without jax.

A command builds its parser from this module and other light ones, and imports its library only
once the flags parse, so `--help` and a mistyped flag answer at once (tests/test_startup.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from vlguard_jax import storage
from vlguard_jax.errors import ConfigError, InputError

COMPUTE_DTYPES = ("float16", "bfloat16", "float32")
# `--template` and `--conv-mode` take a word the command checks once its library loads
# (`families.check_template`): the choices are the families' own, which only the registry lists.
TEMPLATE_METAVAR = "TEMPLATE"
TEMPLATE_HELP = (
    "a model family's template, chat_template or none; auto (the default): the checkpoint family's own "
    "(its authors' evaluation template; a text-only LLM's chat template); the README lists each family's"
)


def output(text: str) -> str:
    """argparse's type for a path a command writes: anything but hf:// (read-only here), refused
    as the flags parse, before any probe of the Hub."""
    try:
        storage.writable(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def parse_mesh(spec: str, flag: str = "--mesh") -> tuple[int, int, int]:
    """`D,F,T` (data, fsdp, tensor; one -1 takes the remaining devices), as config.mesh.shape."""
    try:
        shape = tuple(int(x) for x in spec.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or any(x == 0 or x < -1 for x in shape):
        raise ConfigError(f"{flag} {spec}: expected DATA,FSDP,TENSOR, each a positive count or one -1 (e.g. -1,1,1)")
    return shape  # type: ignore[return-value]


def mesh_arg(text: str) -> str:
    """argparse's type for `--mesh`: "auto" or D,F,T (a ValueError is argparse's usage error)."""
    if text != "auto":
        parse_mesh(text)
    return text


def add_mesh(p: Any) -> None:
    """The evaluation commands' `--mesh` flag (sharding.eval_mesh)."""
    p.add_argument(
        "--mesh",
        default="auto",
        type=mesh_arg,
        help="DATA,FSDP,TENSOR devices, as config.mesh (one -1 takes the rest); auto (default): every "
        "local accelerator along data, or along fsdp when the weights do not fit one; one device on a CPU",
    )


def add_dtype(p: Any) -> None:
    """The evaluation commands' compute `--dtype`."""
    p.add_argument(
        "--dtype",
        choices=("auto",) + COMPUTE_DTYPES,
        default="auto",
        help="compute dtype; auto: float16 on a GPU (the authors'), bfloat16 on a TPU, float32 on a CPU",
    )
