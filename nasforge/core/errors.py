"""Errors a user can cause. The CLI prints ``str(err)`` on one line and exits with code 2.

Anything that is not a :class:`NasforgeError` is a bug in nasforge and keeps its traceback.
"""

from __future__ import annotations

import re


class NasforgeError(Exception):
    """Base class for user-facing errors: the message names the file/key and the fix."""

    exit_code = 2


class JobSpecError(NasforgeError):
    """The job file is malformed: unknown key, wrong type, bad value, unreadable file."""


class UnknownNameError(NasforgeError):
    """A registry lookup (space, strategy, supernet, predictor, ...) found no such name."""


class InvalidArchError(NasforgeError):
    """An architecture does not belong to its search space."""


class ResourceUnavailableError(NasforgeError):
    """Workers asked for resources (GPUs, custom resources) that the cluster does not have."""


class StoreError(NasforgeError):
    """The store cannot be opened, or a job / candidate asked for does not exist."""


class ExportError(NasforgeError):
    """An export was refused (path outside the output folder, candidate not done, ...)."""


class BudgetError(NasforgeError):
    """A compression budget cannot be met with the levels allowed."""


class NasforgeWarning(UserWarning):
    """Something the user should know that does not stop the job (said once, by the driver;
    Ray workers, which repeat the driver's setup, keep it to themselves)."""


_KEY_FIRST = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*( / [A-Za-z_][A-Za-z0-9_]*)*: ")


def option_message(where: str, msg: str) -> str:
    """One line for a check across several options (pydantic gives it no key): ``where.KEY: ...``
    when the message starts with the key it is about, else ``where: ...``."""
    return f"{where}.{msg}" if _KEY_FIRST.match(msg) else f"{where}: {msg}"
