"""One rule for user errors: a command prints one line, `error: ...`, naming the file, record,
tensor, key or flag at fault, and exits 1. A traceback is for bugs; `--debug` on any command, or
VLGUARD_DEBUG=1, shows it for user errors too.

User errors are the `UserError` family, and only it: each kind below is raised where the fault is
found, naming what is at fault. Any other exception (a ValueError from a shape bug, a KeyError) is
a bug and keeps its traceback. The kinds also derive from the built-in error they refine
(`InputError` is a ValueError, `MissingFileError` a FileNotFoundError), so `except ValueError`
around a parse keeps working.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn, Protocol


class UserError(Exception):
    """A run that cannot go on for a reason the user can act on; the message says which."""


class ConfigError(UserError, ValueError):
    """A config key or value that cannot run; the message names `config.KEY`."""


class InputError(UserError, ValueError):
    """A flag's value or a file's content that a command cannot use; the message names it."""


class CheckpointError(UserError, ValueError):
    """A checkpoint (or its config) that cannot be read or is not supported; the message names it."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory a command needs is not there; the message names it."""


class OutputExistsError(UserError, FileExistsError):
    """An output would overwrite something that exists; the message names it and the way out."""


class ResourceError(UserError):
    """Out of device memory; the message says which batch size to lower."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError,)
# OS errors that put the fault in the machine, not the code: a full or read-only disk, a quota, a
# file-size limit, a permission. Any other OSError (a path the code got wrong) is a bug.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS})
# The errors of an environment the user controls that a library raises as its own types (a bucket
# client's connection and credential errors), registered by the layer that uses the library.
ENVIRONMENT_ERRORS: list[type[BaseException]] = []


def register_environment_errors(*types: type[BaseException]) -> None:
    ENVIRONMENT_ERRORS.extend(t for t in types if t not in ENVIRONMENT_ERRORS)


# tensorstore (orbax's array writer) reports a failed file write as a ValueError naming the errno.
_TENSORSTORE_OS_ERROR = re.compile(r"\[os_error_code='(\d+)'\]")


def is_user_error(e: BaseException) -> bool:
    """Whether `e` is the user's to fix (one line) rather than a bug (a traceback)."""
    if isinstance(e, (*USER_ERRORS, *ENVIRONMENT_ERRORS)):
        return True
    if isinstance(e, OSError):
        return e.errno in ENVIRONMENT_ERRNOS
    code = _TENSORSTORE_OS_ERROR.search(str(e)) if isinstance(e, ValueError) else None
    return code is not None and int(code[1]) in ENVIRONMENT_ERRNOS


def debugging(argv) -> bool:
    return "--debug" in argv or os.environ.get("VLGUARD_DEBUG", "") not in ("", "0")


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def report(e: BaseException) -> int:
    print(f"error: {one_line(e)}", file=sys.stderr)
    return 1


class _FailedWriteEchoes(logging.Filter):
    """orbax logs a failed background write, traceback and all, from each thread it fails in (the
    signalling thread, the commit, the finalize, the checkpoint's metadata file) before raising
    the same error to its caller, where the command reports it in one line naming the step."""

    ECHOES = (
        "_SignalingThread.run() raised an exception",
        "Handler Commit operations or the Commit callback in background save thread",
        "Save Finalize thread (save_finalize) failed",
        "Failed to write metadata=",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(echo in message for echo in self.ECHOES)


class _AbandonedWrites(logging.Filter):
    """When one of orbax's concurrent array writes fails, the sibling writes fail the same way and
    asyncio logs each, traceback and all, once its task or future is collected: an array's write
    (`_open_and_write`), or tensorstore opening its store (a `tensorstore_spec` in the error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        abandoned = "exception was never retrieved" in message
        return not (abandoned and ("_open_and_write" in message or "tensorstore_spec=" in message))


def _quiet_abandoned_callbacks(hook):
    """After a failed save, tensorstore's callbacks for the abandoned writes find orbax's event loop
    closed; Python would print each as an ignored exception."""

    def quiet(unraisable):
        e = unraisable.exc_value
        if not (isinstance(e, RuntimeError) and str(e) == "Event loop is closed"):
            hook(unraisable)

    return quiet


def _quiet_echoes() -> None:
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _FailedWriteEchoes) for f in absl.filters):
        absl.addFilter(_FailedWriteEchoes())
        logging.getLogger("asyncio").addFilter(_AbandonedWrites())
        sys.unraisablehook = _quiet_abandoned_callbacks(sys.unraisablehook)


class Command(Protocol):
    """A command's entry point: `main()` reads sys.argv, `main([...])` takes its arguments."""

    def __call__(self, argv: list[str] | None = None) -> int: ...


def cli(main: Callable[[list[str]], int]) -> Command:
    """Wrap a command's `main(argv) -> int`: user errors become one line and exit status 1,
    Ctrl-C exits 130; `--debug` is taken out of argv and lets the traceback through (and the
    echoes of a failed write in library threads)."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        debug = debugging(argv)
        argv = [a for a in argv if a != "--debug"]
        if not debug:
            _quiet_echoes()
        try:
            return main(argv) or 0
        except BrokenPipeError:  # `... | head` closed our stdout: stop quietly, as a pipeline expects
            sys.stdout = open(os.devnull, "w")  # kept open: the exit flush writes here
            return 141
        except Exception as e:
            if debug or not is_user_error(e):
                raise
            return report(e) + isinstance(e, UsageError)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130

    return wrapper


def is_out_of_memory(e: BaseException) -> bool:
    return "RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e)


@contextlib.contextmanager
def oom_hint(message: str) -> Iterator[None]:
    """Device out-of-memory inside the block becomes a ResourceError with `message` (what to
    lower); any other runtime error passes unchanged."""
    try:
        yield
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        raise ResourceError(message) from None


class UsageError(UserError, ValueError):
    """A command line that does not parse; the message names the flag."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one `error:` line (exit status 2) instead of usage and exit."""

    def error(self, message) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse
