"""The short path: the compiled reductions and ``kl_div_logits`` of plain NumPy arrays
straight to the compiled kernels, past the full path's Python.

The full path (namespace, dispatch, checks, row views) costs 0.2-0.4 ms of Python a call on
a 2-core VM (a ``(2, 3)`` call through it: 176 us warm, 419 us right after other work has
evicted the caches, where this path takes 5 and 93), and on W1's ``(4096, 1000)`` float32,
whose kernels take 2 ms, an eighth of the call (W3's ``(64, 32000)``, a fifth); a ``(64,
1000)`` ``kl_div_logits`` spent 65 us of its 155 there. For the reductions with a compiled
kernel (:data:`kldiv._backends.numpy._FUSED`) and for ``kl_div_logits``: NumPy arrays,
plain CPU tensors that need no gradient, or concrete JAX arrays on one CPU device (eager
JAX: a ``(2, 3)`` call took 133 us through the full path and its bridge, 34 here, against
the naive expression's 22), of one float dtype and shape, C-contiguous, reduced along their
last axis, go straight to the kernels, which check the values as they go and
share the rows with their own threads: a reduction below
``kldiv.get_options().parallel_min`` elements in one compiled call, above it by
:func:`kldiv._backends.numpy._native_rows` (the same call, and the rows the kernels leave
NaN redone by the NumPy tiles, as the full path does); logits by
:func:`kldiv._backends.numpy._native_logit_rows` (the kernel, and the tiles for a row it
leaves: a ``-inf`` logit). Anything else, and any result the kernels do not vouch for (a
flagged check, a NaN left in the result), returns None, and the full path runs from the
start: the checks name the problem there. Above ``parallel_min``, measured against the full
path in one process, alternated, each call right after other work: W1's ``kl_div`` 0.93x
the time, W3's 0.81x, ``entropy`` and ``cross_entropy`` 0.90-0.94x.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from kldiv import _compat, _options
from kldiv import _validation as v
from kldiv._backends import numpy as _numpy_path
from kldiv._table import DIVERGENCES, Divergence
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


def _jax_on_one_cpu(arrays: tuple[Any, ...]) -> Any:
    """The device of concrete JAX arrays (not tracers: under ``jit``, ``grad`` and the other
    transformations the arrays are of other types) all on one CPU device, else None; asked
    of a type by name first, so that no JAX import is needed."""
    cls = type(arrays[0])
    if (
        cls.__name__ != "ArrayImpl"
        or not cls.__module__.startswith("jaxlib")
        or not all(type(x) is cls for x in arrays)
    ):
        return None
    devices = {x.device for x in arrays}  # a sharding, not a device, for a sharded array
    device = devices.pop()
    return device if not devices and getattr(device, "platform", None) == "cpu" else None


def to_jax(device: Any, committed: bool) -> Callable[[Array], Array]:
    """A NumPy result back to JAX as JAX's own operations place theirs: committed to the
    inputs' device where one was committed to it, else on the default device, uncommitted
    (``jnp.asarray``: 14 us, where ``jax.device_put`` takes 29). Also the JAX bridge's
    (:mod:`kldiv._backends.jax`)."""
    import jax

    if committed:
        return lambda out: jax.device_put(out, device)
    return jax.numpy.asarray


def _to_torch(out: Array) -> Array:
    import torch

    return torch.from_numpy(out)


def _plain_rows(arrays: tuple[Any, ...], axis: Any) -> tuple[Any, ...] | None:
    """``(rows, shape, back)`` for arrays the short path takes: their ``(rows, n)`` views
    (one per array), their shape, and the function that turns a NumPy result into the
    caller's library (None for NumPy's); else None. CPU tensors and concrete JAX arrays on
    the CPU are read as NumPy views of their memory, without a copy."""
    back: Callable[[Array], Array] | None = None
    if all(type(x) is np.ndarray for x in arrays):
        pass
    elif _plain_cpu_tensors(arrays):
        arrays, back = tuple(x.detach().numpy() for x in arrays), _to_torch
    elif (device := _jax_on_one_cpu(arrays)) is not None:
        back = to_jax(device, any(x.committed for x in arrays))
        arrays = tuple(np.asarray(x) for x in arrays)
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
        or not pa.size
        or not (pa.flags.c_contiguous and qa.flags.c_contiguous)
    ):
        return None
    n = shape[-1]
    views = (pa.reshape(-1, n),) if len(arrays) == 1 else (pa.reshape(-1, n), qa.reshape(-1, n))
    return views, shape, back


def _finished(
    row: Divergence,
    out: Array,
    shape: tuple[int, ...],
    keepdims: bool,
    divisor: float,
    back: Callable[[Array], Array] | None,
) -> Array:
    """A result the kernels vouched for, in the caller's shape, units and library."""
    out = out.reshape((*shape[:-1], 1) if keepdims else shape[:-1])
    if row.finish == "sqrt":
        np.sqrt(out, out=out)  # of a value >= 0: the kernel vouched for it
    if divisor != 1.0:
        out /= divisor
    return out if back is None else back(out)


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
    plain = _plain_rows(arrays, axis)
    if plain is None:
        return None
    views, shape, back = plain
    p_rows, q_rows = views if len(views) == 2 else (views[0], views[0])
    row = DIVERGENCES[name]
    divisor = v.check_base(base) if row.base else 1.0
    n = shape[-1]
    out = np.empty(p_rows.shape[0], dtype=p_rows.dtype)
    if p_rows.size < _options.get_options().parallel_min:
        flagged = native.kl_rows(
            p_rows,
            q_rows,
            out,
            _tolerance(p_rows.dtype, n) if validate else None,
            measures=name == "kl_div" and not validate,
            op=_numpy_path._FUSED[name].op,
            threads=_numpy_path.kernel_threads(p_rows.shape[0], p_rows.size),
        )
    else:
        flagged = _numpy_path._native_rows(name, list(views), out, validate=validate)
        if flagged:
            # as the full path: the public checks, on a flag, and the result stands if they
            # find nothing (a row right at the tolerance, or one the tiles redid and flagged)
            try:
                _numpy_path._check(
                    row.inputs,
                    tuple(x.reshape(shape) for x in views),
                    shape,
                    (len(shape) - 1,),
                )
            except ValueError:
                return None  # the full path names the problem, in its own words
            flagged = False
    # a row left NaN makes the sum NaN (so would inf - inf, which only sends the call to the
    # full path); one reduction, a third of np.isnan(out).any()'s time on a few rows
    if flagged or math.isnan(np.add.reduce(out, dtype=np.float64)):
        return None
    return _finished(row, out, shape, keepdims, divisor, back)


def logits(
    arrays: tuple[Any, ...], axis: Any, keepdims: bool, base: float | None, validate: bool
) -> Array | None:
    """``kldiv.kl_div_logits(a, b, ...)`` where the short path takes it (the arrays
    :func:`reduction` takes), else None: one call of the compiled kernel
    (:func:`kldiv._backends.numpy._native_logit_rows`, which redoes by the NumPy tiles the
    rows it leaves NaN: a logit that is not finite). A row the tiles flag (NaN, ``+inf``, no
    finite entry) sends the call to the full path, whose checks name the problem, or, with
    ``validate=False``, make it NaN as the generic code does."""
    plain = None if _numpy_path._kernels() is None else _plain_rows(arrays, axis)
    if plain is None or len(arrays) != 2:
        return None
    (a_rows, b_rows), shape, back = plain
    divisor = v.check_base(base)
    out = np.empty(a_rows.shape[0], dtype=a_rows.dtype)
    if _numpy_path._native_logit_rows(a_rows, b_rows, out):
        return None
    return _finished(DIVERGENCES["kl_div_logits"], out, shape, keepdims, divisor, back)
