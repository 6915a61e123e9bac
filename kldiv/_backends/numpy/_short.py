"""The short path: the compiled reductions of small arrays in one compiled call, and nothing
else.

On a ``(2, 3)`` input the full path (namespace, dispatch, checks, row views, thread pool,
redone rows) costs some 60 microseconds of Python, twenty times the arithmetic of the naive
``np.sum(p * np.log(p / q), -1)``. For the reductions with a compiled kernel
(:data:`kldiv._backends.numpy._FUSED`), NumPy arrays, or plain CPU tensors that need no
gradient, of one float dtype and shape, C-contiguous, reduced along their last axis, and
smaller than a thread pool pays for (``kldiv.get_options().parallel_min``) go straight to the
compiled kernel, which checks them as it goes. Anything else, and any result the kernel does
not vouch for (a flagged check, a row left NaN), returns None, and the full path runs from
the start: the checks name the problem there, and its tiles redo the rows.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from kldiv import _compat, _options
from kldiv import _validation as v
from kldiv._backends import numpy as _numpy_path
from kldiv._table import DIVERGENCES
from kldiv._typing import Array


def _plain_cpu_tensor(x: Any) -> bool:
    """A float32 or float64 ``torch.Tensor`` (not a subclass) on the CPU, needing no gradient;
    asked of a type by name first, so that no torch import is needed. Whether its values are
    readable is asked of the call apart (:func:`_plain_cpu_tensors`)."""
    cls = type(x)
    if cls.__name__ != "Tensor" or cls.__module__ != "torch" or x.device.type != "cpu":
        return False
    import torch  # loaded: x is one of its tensors

    return x.dtype in (torch.float32, torch.float64) and not (
        x.requires_grad and torch.is_grad_enabled()
    )


def _plain_cpu_tensors(arrays: tuple[Any, ...]) -> bool:
    """Whether every array is a :func:`_plain_cpu_tensor` whose values can be read. For a
    plain tensor on the CPU (not meta, not a subclass such as a fake tensor) what
    :func:`kldiv._compat._torch_values_are_readable` asks is of the moment (compiling,
    transforms, tracing, dispatch modes), not of the tensor: asked once, of the first."""
    return all(_plain_cpu_tensor(x) for x in arrays) and _compat._torch_values_are_readable(
        arrays[0]
    )


@functools.lru_cache(maxsize=256)
def _tolerance(dtype: np.dtype[Any], n: int) -> float:
    """:func:`kldiv._validation.sum_tolerance` for NumPy, kept: ``np.finfo`` twice a call
    was a tenth of a ``(2, 3)`` call's time."""
    return v.sum_tolerance(dtype, n, np)


def reduction(
    name: str,
    arrays: tuple[Any, ...],
    axis: Any,
    keepdims: bool,
    base: float | None,
    validate: bool,
) -> Array | None:
    """``kldiv.<name>(*arrays, ...)`` where the short path takes it, else None."""
    native = _numpy_path._kernels()
    if native is None:
        return None
    if all(type(x) is np.ndarray for x in arrays):
        tensor = False
    elif _plain_cpu_tensors(arrays):
        arrays, tensor = tuple(x.detach().numpy() for x in arrays), True
    else:
        return None
    pa, qa = arrays if len(arrays) == 2 else (arrays[0], arrays[0])
    shape = pa.shape
    if (
        pa.dtype not in _numpy_path._NATIVE_DTYPES
        or qa.dtype != pa.dtype
        or qa.shape != shape
        or not shape
        or type(axis) is not int
        or axis not in (-1, len(shape) - 1)
        or not 0 < pa.size < _options.get_options().parallel_min
        or not (pa.flags.c_contiguous and qa.flags.c_contiguous)
    ):
        return None
    divisor = v.check_base(base) if DIVERGENCES[name].base else 1.0
    n = shape[-1]
    out = np.empty(pa.size // n, dtype=pa.dtype)
    tolerance = _tolerance(pa.dtype, n) if validate else None
    flagged = native.kl_rows(
        pa.reshape(-1, n),
        qa.reshape(-1, n),
        out,
        tolerance,
        measures=name == "kl_div" and not validate,
        op=_numpy_path._FUSED[name].op,
    )
    # a row left NaN makes the sum NaN (so would inf - inf, which only sends the call to the
    # full path); one reduction, a third of np.isnan(out).any()'s time on a few rows
    if flagged or math.isnan(np.add.reduce(out, dtype=np.float64)):
        return None
    out = out.reshape((*shape[:-1], 1) if keepdims else shape[:-1])
    if DIVERGENCES[name].finish == "sqrt":
        np.sqrt(out, out=out)  # of a value >= 0: the kernel vouched for it
    if divisor != 1.0:
        out /= divisor
    if tensor:
        import torch

        return torch.from_numpy(out)
    return out
