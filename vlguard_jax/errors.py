"""One rule for user errors: a command prints one line, `error: ...`, naming the file, record,
tensor, key or flag at fault, and exits 1. A traceback is for bugs; `--debug` on any command, or
VLGUARD_DEBUG=1, shows it for user errors too.

User errors are ValueError (bad input of every kind: records, images, checkpoints, configs),
OSError (missing, unwritable or full files) and `UserError` (a run that cannot go on: a busy
workdir, a diverged loss, device memory, a judge endpoint).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Protocol


class UserError(Exception):
    """A run that cannot go on for a reason the user can act on; the message says which."""


class ConfigError(ValueError):
    """A config key or value that cannot run; the message names `config.KEY`."""


class ResourceError(UserError):
    """Out of device memory; the message says which batch size to lower."""


USER_ERRORS = (ValueError, OSError, UserError)
# The errors of an environment the user controls that a library raises as its own types (a bucket
# client's connection and credential errors), registered by the layer that uses the library.
ENVIRONMENT_ERRORS: list[type[BaseException]] = []


def register_environment_errors(*types: type[BaseException]) -> None:
    ENVIRONMENT_ERRORS.extend(t for t in types if t not in ENVIRONMENT_ERRORS)


def debugging(argv) -> bool:
    return "--debug" in argv or os.environ.get("VLGUARD_DEBUG", "") not in ("", "0")


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def report(e: BaseException) -> int:
    print(f"error: {one_line(e)}", file=sys.stderr)
    return 1


class _FailedWriteEchoes(logging.Filter):
    """orbax logs a failed background write, traceback and all, before raising the same error to
    its caller, where the command reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "_SignalingThread.run() raised an exception" not in record.getMessage()


class _AbandonedWrites(logging.Filter):
    """When one of orbax's concurrent array writes fails, the sibling writes fail the same way and
    asyncio logs each, traceback and all, once its task is collected."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("Task exception was never retrieved" in message and "_open_and_write" in message)


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
        except (*USER_ERRORS, *ENVIRONMENT_ERRORS) as e:
            if debug:
                raise
            return report(e) + isinstance(e, UsageError)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130

    return wrapper


def is_out_of_memory(e: BaseException) -> bool:
    return "RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e)


class UsageError(ValueError):
    """A command line that does not parse; the message names the flag."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one `error:` line (exit status 2) instead of usage and exit."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def at_least(low: int):
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
