"""Dask arrays: each chunk on its own library's fast path, the partial results summed.

Every reduction but ``kl_div_logits`` is a sum of terms, and so are the row sums validation
needs: a chunk's part of a distribution gives its partial result and its partial row sums,
by the fast path of the chunks' library (NumPy's compiled kernels; CuPy's), and Dask adds
the parts up. A distribution axis that spans several chunks is therefore never rechunked,
and each chunk is read once. It stays lazy: what validation would refuse gives NaN, a bad
entry by its chunk's arithmetic (``validate=False`` there), a row off 1 by the summed row
sums, as :func:`kldiv._validation.unnormalised_rows` would.

``kl_div_logits`` needs each row's log-sum-exp before its terms: it runs per chunk where
each distribution lies in one chunk, and is declined (the generic code) otherwise.
``rel_entr`` runs per chunk. Nothing is computed here: the results are Dask arrays.
"""

from __future__ import annotations

import functools
import math
import string
from collections.abc import Sequence
from typing import Any

import dask.array
import numpy as np

from kldiv import _compat, _dispatch
from kldiv import _validation as v
from kldiv._backends import forwarding
from kldiv._backends import numpy as _numpy_path
from kldiv._backends._lazy import refused_as_nan
from kldiv._table import DIVERGENCES, NORMALISED, VALUES
from kldiv._typing import Array, Namespace

# Dask's functions carry no annotations: typed as Any once, here.
da: Any = dask.array


def _chunk_namespace(x: Array) -> Namespace:
    """The namespace of ``x``'s chunks (NumPy, unless they are CuPy's, say)."""
    return _compat.array_namespace(x._meta)


def _aligned(arrays: Sequence[Array]) -> tuple[tuple[int, ...], list[Array]]:
    """The arrays broadcast to one shape and chunked alike."""
    shape = tuple(np.broadcast_shapes(*(tuple(a.shape) for a in arrays)))
    full = [da.broadcast_to(a, shape) if tuple(a.shape) != shape else a for a in arrays]
    index = string.ascii_lowercase[: len(shape)]
    _, unified = da.core.unify_chunks(*(part for a in full for part in (a, index)))
    return shape, list(unified)


def _serially(func: Any, *blocks: Array, **options: Any) -> Array:
    """``func`` of one chunk on the calling thread: Dask's scheduler already runs a chunk per
    core, and kldiv's own thread pool would only make them queue for each other."""
    with _numpy_path.on_this_thread():
        return func(*blocks, **options)


def _only_block(x: Any) -> Array:
    """The one block of a contracted index: ``blockwise`` without ``concatenate`` passes
    the blocks along an index missing from the output as nested lists, one level per such
    index, and with ``concatenate`` it copies even a single block (``concatenate3``)."""
    while isinstance(x, list):
        (x,) = x
    return x


def _unwrapped(func: Any, *blocks: Any, **options: Any) -> Array:
    return _serially(func, *(_only_block(b) for b in blocks), **options)


def _per_chunk(
    name: str,
    aligned: Sequence[Array],
    shape: tuple[int, ...],
    axes: tuple[int, ...],
    keepdims: bool,
    validate: bool,
) -> Array:
    """``name`` of each block (:func:`kldiv._backends._lazy.refused_as_nan`) where every
    distribution lies within one chunk; NotImplemented where one does not. The arrays come
    from :func:`_aligned`, broadcast to ``shape``."""
    if any(len(aligned[0].chunks[a]) > 1 for a in axes):
        return NotImplemented
    chunk_xp = _chunk_namespace(aligned[0])
    index = string.ascii_lowercase[: len(shape)]
    kept = "".join(c for i, c in enumerate(index) if i not in axes or keepdims)
    block = functools.partial(
        _unwrapped,
        refused_as_nan,
        name=name,
        axes=axes,
        keepdims=keepdims,
        validate=validate,
        xp=chunk_xp,
    )
    dtype = np.result_type(*(a.dtype for a in aligned))
    return da.blockwise(
        block,
        kept,
        *(part for a in aligned for part in (a, index)),
        adjust_chunks={index[a]: lambda c: 1 for a in axes} if keepdims else None,
        dtype=dtype,
        meta=chunk_xp.empty((0,) * len(kept), dtype=dtype),
    )


def _partials(
    *blocks: Array, name: str, axes: tuple[int, ...], sums: bool, chunk_xp: Namespace
) -> Array:
    """A block's partial result and, with ``sums``, its partial row sums, in float64,
    stacked on a new first axis, the reduced axes kept (size 1)."""
    part = _dispatch.run(name, chunk_xp, *blocks, axes=axes, keepdims=True, validate=False)
    pieces = [chunk_xp.astype(part, chunk_xp.float64)]
    if sums:
        pieces += [
            chunk_xp.sum(b, axis=axes, keepdims=True, dtype=chunk_xp.float64) for b in blocks
        ]
    return chunk_xp.stack([chunk_xp.broadcast_to(x, pieces[0].shape) for x in pieces])


def _reduce(name: str, arrays: Sequence[Array], options: dict[str, Any]) -> Array:
    """``name`` chunk by chunk: per chunk where each distribution lies in one chunk, else
    as partial results (and row sums) summed over the chunks the distributions span."""
    axes, keepdims, validate = options["axes"], options["keepdims"], options["validate"]
    shape, aligned = _aligned(arrays)
    whole = _per_chunk(name, aligned, shape, axes, keepdims, validate)
    if whole is not NotImplemented:
        return whole
    row = DIVERGENCES[name]
    chunk_xp = _chunk_namespace(aligned[0])
    index = string.ascii_lowercase[: len(shape)]
    sums = validate and NORMALISED in row.checks
    parts = da.blockwise(
        functools.partial(_serially, _partials, name=name, axes=axes, sums=sums, chunk_xp=chunk_xp),
        "Z" + index,
        *(part for a in aligned for part in (a, index)),
        new_axes={"Z": 1 + (len(arrays) if sums else 0)},
        adjust_chunks={index[a]: lambda c: 1 for a in axes},
        dtype=np.float64,
        meta=chunk_xp.empty((0,) * (len(shape) + 1), dtype=np.float64),
    )
    totals = parts.sum(axis=tuple(a + 1 for a in axes), keepdims=True)
    out = totals[0]
    if sums:
        n = math.prod(shape[a] for a in axes)
        for i, x in enumerate(arrays):  # each against its own dtype's tolerance
            tolerance = v.sum_tolerance(x.dtype, n, np)
            out = da.where(abs(totals[1 + i] - 1) <= tolerance, out, np.nan)
    if row.clips(validate):
        out = da.where(out < 0, 0, out)
    if not keepdims:
        out = out.squeeze(axis=axes)
    return out.astype(np.result_type(*(a.dtype for a in arrays)))


_FUSES = (VALUES, NORMALISED)
kl_div = forwarding("kl_div", _FUSES, _reduce)
entropy = forwarding("entropy", _FUSES, _reduce)
cross_entropy = forwarding("cross_entropy", _FUSES, _reduce)
js_div = forwarding("js_div", _FUSES, _reduce)
hellinger = forwarding("hellinger", _FUSES, _reduce)
total_variation = forwarding("total_variation", _FUSES, _reduce)


def _logits(name: str, arrays: Sequence[Array], options: dict[str, Any]) -> Array:
    """``kl_div_logits`` chunk by chunk where each row is one chunk's. The logit checks give
    NaN by the arithmetic alone: the chunks run unvalidated."""
    shape, aligned = _aligned(arrays)
    return _per_chunk(name, aligned, shape, options["axes"], options["keepdims"], False)


def _elementwise(name: str, arrays: Sequence[Array], options: dict[str, Any]) -> Array:
    """``rel_entr`` chunk by chunk."""
    _, (p, q) = _aligned(arrays)
    chunk_xp = _chunk_namespace(p)
    impl = _dispatch.implementation(name, chunk_xp).func
    dtype = np.result_type(p.dtype, q.dtype)
    return da.map_blocks(
        functools.partial(_serially, impl, validate=False, xp=chunk_xp),
        p,
        q,
        dtype=dtype,
        meta=p._meta,
    )


kl_div_logits = forwarding("kl_div_logits", (), _logits)
rel_entr = forwarding("rel_entr", (), _elementwise)
