"""What users bring from PyTorch, SciPy and optax: ``reduction``, ``weights``, ``normalize``
and ``where``, for every function of :mod:`kldiv._table`.

Each is a step around the plain call, written once against the array API, so that it is the
same on every library and lazy arrays stay lazy: ``where`` and ``normalize`` prepare the
inputs (the plain call then checks them as ever), ``weights`` and ``reduction`` combine its
per-distribution results.

- ``where``: a boolean mask broadcast against the inputs. A masked entry contributes
  nothing: it becomes a zero probability (``-inf`` for logits) in both arguments, and the
  checks see only the entries left. A distribution masked entirely has no divergence: NaN,
  and it counts for nothing in ``"sum"``, ``"mean"`` and ``"batchmean"``.
- ``normalize``: SciPy's ``scipy.stats.entropy`` behaviour: each distribution divided by its
  sum, integer and boolean counts first promoted to the library's default floating dtype.
  The checks of negative, NaN and infinite entries still run; a distribution summing to 0
  cannot be divided (``ValueError`` where values can be read, NaN elsewhere).
- ``weights``: one per batch position (broadcast against the result), non-negative.
- ``reduction``: ``"none"`` (the per-distribution values), ``"sum"``, ``"batchmean"`` (the
  mean over every batch position of the per-distribution values, weighted by ``weights``:
  ``sum(w*kl)/sum(w)``; PyTorch's ``batchmean`` divides by the size of the first axis only,
  which is not the mean for inputs of shape ``(B, T, V)``), and ``"mean"`` (PyTorch's
  ``mean``: that sum over the number of elements, distribution axes included, so
  ``batchmean / n``; not a divergence, kept for parity).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from kldiv import _compat
from kldiv import _validation as v
from kldiv._table import DIVERGENCES
from kldiv._typing import Array, Axis, Namespace

REDUCTIONS = ("none", "sum", "mean", "batchmean")


def is_plain(reduction: str, weights: object, normalize: bool, where: object) -> bool:
    """Whether a call uses none of these options (the plain call then runs alone)."""
    return reduction == "none" and weights is None and not normalize and where is None


def divergence(
    name: str,
    arrays: Sequence[object],
    plain: Callable[..., Array],
    *,
    axis: Axis,
    keepdims: bool,
    reduction: str,
    weights: object,
    normalize: bool,
    where: object,
) -> Array:
    """``name`` of ``arrays`` with the options of this module; ``plain(*arrays, axis=,
    keepdims=)`` is the call without them (its base and validate already bound)."""
    row = DIVERGENCES[name]
    if reduction not in REDUCTIONS:
        msg = f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, not {reduction!r}"
        raise ValueError(msg)
    if normalize and (row.logits or not row.reduces):
        what = "logits" if row.logits else "elementwise terms"
        msg = f"normalize=True divides distributions by their sums; {name} takes {what}"
        raise TypeError(msg)
    # a mask that is no array (a list of bools) is made one apart, so that it keeps its dtype
    # rather than taking the inputs' floating one
    as_array = where is not None and _compat.is_array_api_obj(where)
    names = (*row.inputs, "where") if as_array else row.inputs
    given = (*arrays, where) if as_array else tuple(arrays)
    xp, converted = _namespace(names, given, promote=normalize)
    if where is not None and not as_array:
        converted.append(xp.asarray(where, device=_compat.device(converted[0])))
    shapes = [tuple(x.shape) for x in converted]
    shape = v.broadcast_shape((*row.inputs, "where")[: len(shapes)], shapes)
    mask = None if where is None else _mask(converted.pop(), shape, xp)
    axes = v.normalize_axis(axis, len(shape), name) if row.reduces else ()
    dead = None  # the distributions masked entirely
    if mask is not None:
        filler = -math.inf if row.logits else 0.0
        converted = [_masked(x, mask, filler, shape, xp) for x in converted]
        if row.reduces:
            dead = ~xp.any(mask, axis=axes)
            # each gets a stand-in (uniform), so that the checks pass it; its result is NaN
            converted = [_stand_in(x, dead, axes, row.logits, xp) for x in converted]
    if normalize:
        converted = [
            _normalised(arg, x, axes, xp) for arg, x in zip(row.inputs, converted, strict=True)
        ]
    out = plain(*converted, axis=axes, keepdims=False) if row.reduces else plain(*converted)
    if dead is not None:
        out = xp.where(dead, xp.full_like(out, xp.nan), out)
    w = None if weights is None else _weights(weights, out, xp)
    if reduction == "none":
        if w is not None:
            out = out * w
        if keepdims and row.reduces:
            out = xp.reshape(out, tuple(1 if i in axes else s for i, s in enumerate(shape)))
        return out
    # what counts in a sum or mean: every batch position but those masked entirely; for the
    # elementwise rel_entr, the entries not masked
    live = None
    if dead is not None:
        live = ~dead
    elif mask is not None and not row.reduces:
        live = mask
    n = math.prod(shape[i] for i in axes)
    return _reduce(out, w, live, reduction, n, xp)


def _namespace(
    names: Sequence[str], arrays: Sequence[object], *, promote: bool
) -> tuple[Namespace, list[Array]]:
    """:func:`kldiv._validation.namespace`, with integer and boolean inputs (counts) made
    the library's default floating dtype when ``promote`` (``normalize=True``)."""
    xp, converted = v.namespace(names, arrays)
    if not promote:
        return xp, converted
    out = []
    for name, x in zip(names, converted, strict=True):
        counts = xp.isdtype(x.dtype, "integral") or xp.isdtype(x.dtype, "bool")
        if name != "where" and counts:
            info = xp.__array_namespace_info__()
            floating = info.default_dtypes(device=_compat.device(x))["real floating"]
            x = xp.astype(x, floating)
        out.append(x)
    return xp, out


def _mask(mask: Array, shape: tuple[int, ...], xp: Namespace) -> Array:
    if not xp.isdtype(mask.dtype, "bool"):
        msg = f"where must be a boolean mask, not of dtype {mask.dtype}"
        raise TypeError(msg)
    return xp.broadcast_to(mask, shape)


def _masked(x: Array, mask: Array, filler: float, shape: tuple[int, ...], xp: Namespace) -> Array:
    """``x`` broadcast to ``shape``, with ``filler`` where ``mask`` is False."""
    x = xp.broadcast_to(x, shape)
    return xp.where(mask, x, _scalar(filler, x, xp))


def _scalar(value: float, like: Array, xp: Namespace) -> Array:
    return xp.asarray(value, dtype=like.dtype, device=_compat.device(like))


def _stand_in(x: Array, dead: Array, axes: tuple[int, ...], logits: bool, xp: Namespace) -> Array:
    """``x`` with the distributions ``dead`` (a mask over the batch positions) made uniform:
    zero logits, or ``1/n`` probabilities."""
    n = math.prod(x.shape[i] for i in axes)
    keep = xp.reshape(dead, tuple(1 if i in axes else s for i, s in enumerate(x.shape)))
    return xp.where(keep, _scalar(0.0 if logits else 1.0 / n, x, xp), x)


def _normalised(name: str, x: Array, axes: tuple[int, ...], xp: Namespace) -> Array:
    """``x`` divided by its sum over ``axes``. A sum of 0 of entries that are otherwise fine
    (the checks name a negative or NaN entry better) raises where values can be read; it
    gives NaN elsewhere, as 0/0."""
    total = xp.sum(x, axis=axes, keepdims=True)
    if _compat.values_are_readable(total):
        bad_entries = xp.any((x < 0) | xp.isnan(x), axis=axes, keepdims=True)
        empty = (total == 0) & ~bad_entries
        if bool(xp.any(empty)):
            batch = tuple(s for i, s in enumerate(empty.shape) if i not in axes)
            index = v.first_true(xp.reshape(empty, batch), xp)
            msg = (
                f"{name} cannot be normalised: its distribution at batch index "
                f"{v.show_index(index)} sums to 0"
            )
            raise ValueError(msg)
    return x / total


def _weights(weights: object, out: Array, xp: Namespace) -> Array:
    """``weights`` as an array of ``out``'s dtype and shape, checked to be finite and >= 0
    where values can be read (NaN in the result where not)."""
    _, (_, w) = v.namespace(("the result", "weights"), (out, weights))
    if not (xp.isdtype(w.dtype, "real floating") or xp.isdtype(w.dtype, "integral")):
        msg = f"weights must be real numbers, not of dtype {w.dtype}"
        raise TypeError(msg)
    shape = tuple(out.shape)
    if v.broadcast_shape(("the result", "weights"), [shape, tuple(w.shape)]) != shape:
        msg = f"weights of shape {tuple(w.shape)} do not broadcast to the result's {shape}"
        raise ValueError(msg)
    w = xp.broadcast_to(xp.astype(w, out.dtype), shape)
    ok = (w >= 0) & (w < math.inf)
    if not _compat.values_are_readable(w):
        return xp.where(ok, w, xp.full_like(w, xp.nan))
    if not bool(xp.all(ok)):
        index = v.first_true(~ok, xp)
        msg = f"weights must be finite and >= 0; entry {v.show_index(index)} is {float(w[index])!r}"
        raise ValueError(msg)
    return w


def _reduce(
    out: Array, w: Array | None, live: Array | None, reduction: str, n: int, xp: Namespace
) -> Array:
    """The values ``out`` summed, or averaged over the batch positions (``"batchmean"``,
    weighted by ``w``) and over ``n`` more (``"mean"``); positions not ``live`` count for
    nothing."""
    weight = xp.ones_like(out) if w is None else w
    if live is not None:
        weight = xp.where(live, weight, xp.zeros_like(weight))
        out = xp.where(live, out, xp.zeros_like(out))
    total = xp.sum(out * weight)
    if reduction == "sum":
        return total
    mean = total / xp.sum(weight)
    return mean if reduction == "batchmean" else mean / n
