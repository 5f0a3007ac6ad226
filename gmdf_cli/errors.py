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
