"""The one rule for errors: only the UserError family is shortened to one `error:` line. Any
other exception is a bug and reaches the user with its traceback."""

import errno
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from vlguard_jax.errors import (
    CheckpointError,
    ConfigError,
    InputError,
    MissingFileError,
    OutputExistsError,
    ResourceError,
    UsageError,
    UserError,
    cli,
    oom_hint,
)


def test_a_shape_bug_in_a_jitted_function_keeps_its_traceback(capsys):
    @jax.jit
    def buggy(x):
        return x @ jnp.ones((3, 4))  # [2, 5] @ [3, 4]: a bug, not the user's input

    @cli
    def main(argv):
        buggy(jnp.ones((2, 5)))
        return 0

    with pytest.raises(TypeError, match="dot_general requires contracting dimensions to have the same shape"):
        main([])
    assert capsys.readouterr().err == ""  # no `error:` line: the traceback is the report


@pytest.mark.parametrize(
    "bug", [ValueError("operands could not be broadcast together"), KeyError("w"), OSError(5, "x")]
)
def test_builtin_errors_from_code_are_bugs(bug, capsys):
    @cli
    def main(argv):
        raise bug

    with pytest.raises(type(bug)):
        main([])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("config.optim.lr: must be positive"),
        InputError("--top-p must be in (0, 1]"),
        CheckpointError("ck/config.json: not a llava-hf config"),
        MissingFileError("q.jsonl: no such question file"),
        OutputExistsError("out already exists"),
        ResourceError("out of device memory"),
    ],
)
def test_user_errors_are_one_line_and_still_their_builtin_kind(error, capsys):
    @cli
    def main(argv):
        raise error

    assert main([]) == 1
    assert capsys.readouterr().err == f"error: {error}\n"
    assert isinstance(error, UserError)
    # `except ValueError` / `except FileNotFoundError` around a parse keeps catching them
    assert isinstance(error, (ValueError, FileNotFoundError, FileExistsError)) or isinstance(error, ResourceError)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS])
def test_a_full_or_closed_disk_is_the_machine_s_fault_not_a_bug(code, capsys):
    @cli
    def main(argv):
        raise OSError(code, os.strerror(code), "/runs/x/state")

    assert main([]) == 1
    assert capsys.readouterr().err == f"error: [Errno {code}] {os.strerror(code)}: '/runs/x/state'\n"


def test_a_usage_error_exits_2(capsys):
    @cli
    def main(argv):
        raise UsageError("prog: the following arguments are required: --src")

    assert main([]) == 2
    assert capsys.readouterr().err == "error: prog: the following arguments are required: --src\n"


def test_oom_hint_names_what_to_lower_and_passes_other_errors():
    with pytest.raises(ResourceError, match="^lower the batch$"):
        with oom_hint("lower the batch"):
            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.00GiB")
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        with oom_hint("lower the batch"):
            raise jax.errors.JaxRuntimeError("INTERNAL: something else")


def test_a_closed_pipe_stops_quietly():
    """`vlguard-... --help | head -1`: the reader went away; no error line, no traceback."""
    code = "from vlguard_jax.errors import cli\ncli(lambda argv: [print('x' * 80) for _ in range(100000)] and 0)([])"
    out = subprocess.run(
        f'{sys.executable} -c "{code}" | head -1', shell=True, capture_output=True, text=True, timeout=120
    )
    assert out.stdout == "x" * 80 + "\n" and out.stderr == ""


def test_tensorstore_s_failed_write_naming_a_full_disk_is_one_line(capsys):
    """tensorstore reports a file write the disk refused as a ValueError carrying the errno."""
    full = ValueError(
        'OUT_OF_RANGE: Error writing "w/c/0" in OCDBT database at local file "/ck/": Failed to write 376942 '
        "bytes to file 4: File too large [os_error_code='27']"
    )
    assert cli(lambda argv: (_ for _ in ()).throw(full))([]) == 1
    assert capsys.readouterr().err.startswith("error: OUT_OF_RANGE: Error writing")
    other = ValueError("INVALID_ARGUMENT: bad spec [os_error_code='5']")  # EIO: not the user's to fix
    with pytest.raises(ValueError):
        cli(lambda argv: (_ for _ in ()).throw(other))([])
