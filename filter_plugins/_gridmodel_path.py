"""Shared plumbing of the grid_* filter plugins (this file provides no filters itself).

The filters wrap the pure functions of ``cvmc.gridmodel``. Ansible may run from a Python where
the ``cvmc`` package is not installed; then :func:`ensure_cvmc_importable` puts this checkout's
``src/`` (``filter_plugins/../src``) on ``sys.path``. Ansible loads filter plugins by file path
and their directory is not on ``sys.path``, so each plugin first appends its own directory to
``sys.path`` and then imports this module by name.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from ansible.errors import AnsibleFilterError

P = ParamSpec("P")
R = TypeVar("R")

#: This checkout's ``src`` directory, which holds the ``cvmc`` package.
SRC_DIR = Path(__file__).resolve().parent.parent / "src"


def ensure_cvmc_importable(src_dir: Path = SRC_DIR) -> bool:
    """Make ``cvmc.gridmodel`` importable; True if ``src_dir`` had to be added to ``sys.path``."""
    try:
        importlib.import_module("cvmc.gridmodel")
    except ImportError:
        if str(src_dir) not in sys.path:
            sys.path.insert(0, str(src_dir))
        importlib.invalidate_caches()
        importlib.import_module("cvmc.gridmodel")
        return True
    return False


def filter_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the pure function's ``ValueError`` into ``AnsibleFilterError``, message unchanged."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ValueError as exc:
            raise AnsibleFilterError(str(exc)) from None

    return wrapper


class FilterModule:
    """Ansible loads every ``*.py`` in filter_plugins/; this one contributes no filters."""

    def filters(self) -> dict[str, Callable[..., object]]:
        return {}
