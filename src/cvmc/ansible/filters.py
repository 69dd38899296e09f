"""What every grid filter plugin shares: the mapping of the pure functions' errors.

The filter plugins (``filter_plugins/grid_*.py``, ``roles/*/filter_plugins``) are thin: each
imports its pure functions from ``cvmc.gridmodel`` with plain imports (the controller's venv
installs ``cvmc``; ``make venv``) and wraps them with :func:`filter_errors`, so a bad input
stops the play with the pure function's own message, which names the variable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from ansible.errors import AnsibleFilterError

__all__ = ["filter_errors"]

P = ParamSpec("P")
R = TypeVar("R")


def filter_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the pure function's ``ValueError`` into ``AnsibleFilterError``, message unchanged."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ValueError as exc:
            raise AnsibleFilterError(str(exc)) from None

    return wrapper
