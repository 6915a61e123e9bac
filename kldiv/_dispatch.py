"""Which implementation runs for which array library: the one dispatch table of kldiv.

A backend is a module with the functions of :mod:`kldiv._agnostic` (same names, same
keywords). Modules are imported on first use, so ``import kldiv`` loads no optional library.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from kldiv import _agnostic, _compat

# (does this namespace match?, the backend module). First match wins; no match runs the
# generic array-API code (PyTorch, JAX, Dask, array_api_strict, ...).
_TABLE: tuple[tuple[Callable[[Any], bool], str], ...] = (
    (_compat.is_numpy_namespace, "kldiv._numpy_backend"),
    (_compat.is_cupy_namespace, "kldiv._cupy_backend"),
)


def backend(xp: Any) -> ModuleType:
    """The module that computes for arrays of namespace ``xp``."""
    for matches, name in _TABLE:
        if matches(xp):
            return importlib.import_module(name)
    return _agnostic
