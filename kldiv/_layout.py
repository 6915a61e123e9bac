"""Arrays seen as the rows the kernels reduce: ``(rows, n)`` with contiguous rows.

A kernel reads row ``r`` of an input at ``r * stride`` elements from the array's first
element, its ``n`` entries one after another. The reduced axes are moved last; the input is
copied only when no single stride describes the result: a row stride of 0 covers one
distribution broadcast against a batch without materialising the batch.

The decisions read shapes and strides only; views and copies are made by ``xp``, NumPy or
CuPy alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from kldiv._typing import Array, Namespace


def kept_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    """The shape of a reduction of ``shape`` over ``axes``."""
    if keepdims:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def row_stride(x: Array, row_ndim: int) -> int | None:
    """The stride in elements between the rows of ``x`` whose last ``row_ndim`` axes form a
    row, or None when the rows are not contiguous or not evenly spaced."""
    split = x.ndim - row_ndim
    expected = x.itemsize
    for size, stride in zip(reversed(x.shape[split:]), reversed(x.strides[split:]), strict=True):
        if size != 1 and stride != expected:
            return None
        expected *= size
    row_bytes: int | None = None
    for size, stride in zip(reversed(x.shape[:split]), reversed(x.strides[:split]), strict=True):
        if size == 1:
            continue
        if row_bytes is None:
            row_bytes = stride
        elif stride != expected:
            return None
        expected = stride * size
    if row_bytes is None:  # at most one row: any stride will do
        return int(math.prod(x.shape[split:]))
    return row_bytes // x.itemsize if row_bytes % x.itemsize == 0 else None


def as_rows(
    x: Array, shape: tuple[int, ...], axes: tuple[int, ...], xp: Namespace
) -> tuple[Array, int]:
    """``x`` broadcast to ``shape`` with ``axes`` moved last, and its row stride.

    Copies, in order of preference: nothing; ``x`` itself, when its own layout is the
    problem (a transposed or strided input); the broadcast result, when ``x`` is broadcast
    over some leading axes but not others (its rows are then not evenly spaced).
    """
    ndim = len(shape)
    last = tuple(range(ndim - len(axes), ndim))
    x = xp.moveaxis(x[(None,) * (ndim - x.ndim)], axes, last)  # new leading axes: a view
    moved_shape = rows_shape(shape, axes) + tuple(shape[a] for a in axes)
    view = xp.broadcast_to(x, moved_shape)
    stride = row_stride(view, len(axes))
    if stride is None:
        view = xp.broadcast_to(xp.ascontiguousarray(x), moved_shape)
        stride = row_stride(view, len(axes))
    if stride is None:
        view = xp.ascontiguousarray(view)
        stride = math.prod(shape[a] for a in axes)
    return view, stride


def rows_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of ``shape`` that are not reduced: one row per index into them."""
    return kept_shape(shape, axes, keepdims=False)


def broadcast_shape(arrays: Sequence[Array]) -> tuple[int, ...]:
    """The shape the arrays broadcast to (the public layer has checked that they do)."""
    ndim = max(a.ndim for a in arrays)
    shape = [1] * ndim
    for a in arrays:
        for i, size in enumerate(a.shape, start=ndim - a.ndim):
            if size != 1:
                shape[i] = size
    return tuple(shape)
