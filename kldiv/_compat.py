"""The one module that imports ``array_api_compat``.

Everything else in kldiv asks this module which library an array belongs to, so a change of
the compat layer (or a workaround for one library) is made here once. ``array_api_compat``
looks only in ``sys.modules`` to recognise arrays, so none of these calls imports CuPy, torch,
JAX or Dask.
"""

from __future__ import annotations

import sys
from typing import Any

from array_api_compat import (
    array_namespace,
    device,
    is_array_api_obj,
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_array,
    is_lazy_array,
    is_numpy_namespace,
    is_torch_namespace,
)

__all__ = [
    "array_namespace",
    "device",
    "is_array_api_obj",
    "is_cupy_namespace",
    "is_dask_namespace",
    "is_numpy_namespace",
    "is_torch_namespace",
    "values_are_readable",
]


def values_are_readable(x: Any) -> bool:
    """Whether ``bool(x)``/``float(x)`` on values of ``x`` is cheap and allowed.

    ``is_lazy_array`` answers True for every JAX array, since it cannot tell a concrete
    array from one under ``jax.jit`` tracing without importing JAX. A concrete JAX array
    can be read, so only a tracer counts as lazy here; Dask always does.
    """
    if is_jax_array(x):
        core = sys.modules.get("jax.core")
        tracer = getattr(core, "Tracer", None)
        return tracer is None or not isinstance(x, tracer)
    return not is_lazy_array(x)
