"""Errors a user can cause. The CLI prints them as one line and exits non-zero, never with a traceback."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
"""Something could not be done (weights unavailable, some inputs failed); results already computed are kept."""
EXIT_USAGE = 2
"""Bad command line: unknown option, missing path, unknown name."""


class GMDFError(Exception):
    """A problem the user can fix, described in one line."""

    exit_code = EXIT_FAILURE


class UsageError(GMDFError):
    exit_code = EXIT_USAGE


class WeightsError(GMDFError):
    """Weights cannot be found, downloaded, verified or loaded."""


EXIT_INTERRUPTED = 130
"""Ctrl-C: the files already finished are written."""
EXIT_TERMINATED = 143
"""SIGTERM (128 + 15): as Ctrl-C, the files already finished are written."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by gmdf's own handler so that a terminated job ends as an interrupted one: finished work
    written, then exit 143."""


def interrupt_exit_code(exc: BaseException) -> int | None:
    """The exit code of the Ctrl-C (130) or SIGTERM (143) that ``exc`` is, or that caused it; None when no interrupt
    is behind it. CPython turns an exception raised while a C extension initialises (our signal handlers raise at
    any bytecode, a lazy ``import matplotlib`` included) into ``ImportError: initialization failed`` whose cause is
    the interrupt; such an error is that interrupt."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return EXIT_TERMINATED if isinstance(current, Terminated) else EXIT_INTERRUPTED
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def one_line(exc: BaseException) -> str:
    """An unexpected exception as one line: its type and the last line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip(": ")
