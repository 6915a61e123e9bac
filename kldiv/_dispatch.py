"""Which implementation runs for which function and array library.

================  ======================================================================
arrays            implementation, per function
================  ======================================================================
NumPy             :mod:`kldiv._backends.numpy`: compiled C kernels or NumPy tiles, threaded
CuPy              :mod:`kldiv._backends.cupy`: one CUDA kernel launch
PyTorch           :mod:`kldiv._backends.torch`: CPU tensors through NumPy's fast path
                  (zero-copy views), CUDA tensors through CuPy's (DLPack), with an
                  analytic backward; the generic code where values cannot be read
                  (``torch.compile``, ``vmap``, meta and fake tensors)
Dask              :mod:`kldiv._backends.dask`: each chunk on its own library's fast path,
                  partial results summed where a distribution spans chunks
JAX               :mod:`kldiv._backends.jax`: concrete CPU arrays through NumPy's fast
                  path (DLPack); checked ``kl_div`` of tracers in passes XLA fuses;
                  the generic code for the rest under ``jit`` and the transforms
anything else     :mod:`kldiv._agnostic`: the generic array-API code (array_api_strict)
================  ======================================================================

A function a fast path lacks runs the generic code, and so does a call the fast path
declines by returning ``NotImplemented`` (a dtype or device it does not take). Each
implementation says which value checks of :mod:`kldiv._table` it does itself
(:func:`fuses`); the public layer runs the rest. Fast paths are imported on first use, so
``import kldiv`` loads no optional library.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from kldiv import _agnostic, _compat
from kldiv._typing import Namespace

F = TypeVar("F", bound=Callable[..., Any])

# (does this namespace match?, the module of its fast paths). First match wins.
_FAST_PATHS: tuple[tuple[Callable[[Any], bool], str], ...] = (
    (_compat.is_numpy_namespace, "kldiv._backends.numpy"),
    (_compat.is_cupy_namespace, "kldiv._backends.cupy"),
    (_compat.is_torch_namespace, "kldiv._backends.torch"),
    (_compat.is_dask_namespace, "kldiv._backends.dask"),
    (_compat.is_jax_namespace, "kldiv._backends.jax"),
)


class Implementation(NamedTuple):
    """A function for one library, and the value checks it does itself."""

    func: Callable[..., Any]
    fused: frozenset[str]


def fuses(*checks: str) -> Callable[[F], F]:
    """Mark a fast path's function as doing ``checks`` (names of :mod:`kldiv._table`) itself
    when called with ``validate=True``, raising what the public layer's checks would."""

    def mark(func: F) -> F:
        func.__kldiv_fuses__ = frozenset(checks)  # type: ignore[attr-defined]
        return func

    return mark


def generic(name: str) -> Implementation:
    """The generic array-API implementation of ``name``: it fuses no check."""
    return Implementation(getattr(_agnostic, name), frozenset())


# Keyed by the namespace's name: a dict of strings, which torch.compile traces as constants.
_cache: dict[tuple[str, str], Implementation] = {}


def implementation(name: str, xp: Namespace) -> Implementation:
    """What computes ``name`` for arrays of namespace ``xp``."""
    key = (name, xp.__name__)
    found = _cache.get(key)
    if found is None:
        found = _cache[key] = _find(name, xp)
    return found


# fast_path's answers, keyed as _cache
_fast: dict[tuple[str, str], Callable[..., Any] | None] = {}


def fast_path(name: str, xp: Namespace) -> Callable[..., Any] | None:
    """The fast path's own ``name`` for namespace ``xp``, or None where it has none: for a
    function that only some libraries have a faster route to and the generic code has not
    (the loss against labels)."""
    key = (name, xp.__name__)
    if key not in _fast:
        _fast[key] = None
        for matches, module_name in _FAST_PATHS:
            if matches(xp):
                _fast[key] = getattr(importlib.import_module(module_name), name, None)
                break
    return _fast[key]


def run(name: str, xp: Namespace, *arrays: Any, **options: Any) -> Any:
    """``name`` of ``arrays`` by the implementation for ``xp``, or by the generic code where
    that declines the call: for callers that run no checks in between (the public layer
    does, and so goes step by step)."""
    out = implementation(name, xp).func(*arrays, xp=xp, **options)
    if out is NotImplemented:
        out = generic(name).func(*arrays, xp=xp, **options)
    return out


def _find(name: str, xp: Namespace) -> Implementation:
    for matches, module_name in _FAST_PATHS:
        if matches(xp):
            func = getattr(importlib.import_module(module_name), name, None)
            if func is None:
                break
            return Implementation(func, getattr(func, "__kldiv_fuses__", frozenset()))
    return generic(name)
