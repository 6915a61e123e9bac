"""Checks of user input, shared by every public function and the loss class.

Each check builds its message first and then raises: ``TypeError`` for array types and
dtypes, ``ValueError`` for shapes and values, numpy's ``AxisError`` (both a ``ValueError``
and an ``IndexError``) for an axis out of range. Messages name the argument.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from numpy.exceptions import AxisError

from kldiv import _compat, _dtypes
from kldiv._table import LOGITS, NORMALISED, VALUES
from kldiv._typing import Array, Namespace


def _type_name(x: object) -> str:
    cls = type(x)
    return f"{cls.__module__}.{cls.__qualname__}"


def namespace(names: Sequence[str], arrays: Sequence[object]) -> tuple[Namespace, list[Array]]:
    """The array namespace of ``arrays``, and the arrays with non-arrays converted.

    Python scalars and sequences become arrays of the library, device and (floating) dtype of
    the first array beside them, NumPy's defaults when there is none, so
    ``kl_div([0.5, 0.5], q_tensor)`` works. Arrays of two libraries, or on two devices, raise.
    """
    for name, a in zip(names, arrays, strict=True):
        _check_usable(name, a)
    real = [(n, a) for n, a in zip(names, arrays, strict=True) if _compat.is_array_api_obj(a)]
    if real:
        try:
            xp = _compat.array_namespace(*(a for _, a in real))
        except TypeError:
            kinds = ", ".join(f"{n} is a {_type_name(a)}" for n, a in real)
            msg = f"arrays of one library expected, but {kinds}"
            raise TypeError(msg) from None
        # A JAX tracer has no device (None) until it is placed: nothing to compare.
        # a plain loop: torch.compile cannot trace a walrus inside a comprehension
        devices = []
        for n, a in real:
            d = _compat.device(a)
            if d is not None:
                devices.append((n, d))
        first_name, first_device = devices[0] if devices else ("", None)
        for name, dev in devices[1:]:
            if dev != first_device:
                msg = (
                    f"{first_name} is on device {first_device!r} but {name} is on "
                    f"{dev!r}; move them to one device (kldiv never copies between devices)"
                )
                raise ValueError(msg)
        like: Any = real[0][1]
        kwargs: dict[str, Any] = {"device": _compat.device(like)}
        if xp.isdtype(like.dtype, "real floating"):
            kwargs["dtype"] = like.dtype
    else:
        xp = _compat.array_namespace(np.empty(0))
        kwargs = {}
    converted = []
    for name, a in zip(names, arrays, strict=True):
        if not _compat.is_array_api_obj(a):
            try:
                a = xp.asarray(a, **kwargs)
            except (TypeError, ValueError) as exc:
                msg = f"{name} must be an array or a sequence of numbers, not {_type_name(a)}"
                raise TypeError(msg) from exc
        converted.append(a)
    return xp, converted


def _check_usable(name: str, a: object) -> None:
    """Refuse what would otherwise be converted into a wrong number, or fail far from here.

    ``None`` and strings would become NaN or a float through ``asarray``; a masked array's mask
    would be ignored; an array with unknown sizes (Dask after boolean indexing) cannot be
    checked against the other's shape.
    """
    if a is None or isinstance(a, (str, bytes)):
        msg = f"{name} must be an array or a sequence of numbers, not {_type_name(a)}"
        raise TypeError(msg)
    if isinstance(a, np.ma.MaskedArray):
        msg = (
            f"{name} is a NumPy masked array, and kldiv does not honour masks; pass "
            f"{name}.filled(0) to count masked entries as zero probability, or a plain array"
        )
        raise TypeError(msg)
    shape = getattr(a, "shape", None) if _compat.is_array_api_obj(a) else None
    if shape is not None and any(
        s is None or (isinstance(s, float) and math.isnan(s)) for s in shape
    ):
        shown = tuple("?" if s is None or s != s else s for s in shape)
        msg = (
            f"{name} has unknown sizes along some axes (shape {shown}), as Dask arrays have "
            f"after boolean indexing; call {name}.compute_chunk_sizes() first (Dask), or pass "
            "an array of known shape"
        )
        raise ValueError(msg)


def check_floating(name: str, x: Array, xp: Namespace) -> None:
    """Raise ``TypeError`` unless ``x`` has a real floating dtype."""
    if not xp.isdtype(x.dtype, "real floating"):
        msg = f"{name} must have a real floating dtype (float16, float32 or float64), not {x.dtype}"
        raise TypeError(msg)


def broadcast_shape(names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    """The shape ``shapes`` broadcast to, or a ``ValueError`` showing them all."""
    ndim = max(len(s) for s in shapes)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    out = []
    for sizes in zip(*padded, strict=True):
        others = {s for s in sizes if s != 1}
        if len(others) > 1:
            pairs = zip(names, shapes, strict=True)
            shown = " and ".join(f"{n} of shape {tuple(s)}" for n, s in pairs)
            msg = f"{shown} do not broadcast against each other"
            raise ValueError(msg)
        out.append(others.pop() if others else 1)
    return tuple(out)


def normalize_axis(axis: int | tuple[int, ...] | None, ndim: int, func: str) -> tuple[int, ...]:
    """``axis`` as a sorted tuple of non-negative axes of an ``ndim``-dimensional array;
    None is every axis, as in NumPy."""
    if axis is None:
        if ndim == 0:
            msg = f"{func}: a 0-d array has no axis for a distribution to lie along"
            raise ValueError(msg)
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in axes:
        try:
            a = operator.index(a)
        except TypeError:
            msg = f"{func}: axis must be an int or a tuple of ints, not {axis!r}"
            raise TypeError(msg) from None
        if not -ndim <= a < ndim:
            raise AxisError(a, ndim, msg_prefix=func)
        out.append(a % ndim)
    if len(set(out)) != len(out):
        msg = f"{func}: axis {axis!r} repeats an axis"
        raise ValueError(msg)
    if not out:
        msg = f"{func}: axis must name at least one axis, got {axis!r}"
        raise ValueError(msg)
    return tuple(sorted(out))


def check_distribution_axes(
    names: Sequence[str], arrays: Sequence[Array], shape: tuple[int, ...], axes: tuple[int, ...]
) -> None:
    """A distribution axis may not be broadcast: it would stretch one value over a row."""
    for name, x in zip(names, arrays, strict=True):
        padded = (1,) * (len(shape) - x.ndim) + tuple(x.shape)
        for a in axes:
            if padded[a] != shape[a]:
                msg = (
                    f"{name} has size {padded[a]} along axis {a - len(shape)} where the other "
                    f"argument has {shape[a]}: a distribution axis cannot be broadcast"
                )
                raise ValueError(msg)


def check_not_empty(func: str, shape: tuple[int, ...], axes: tuple[int, ...]) -> None:
    """A distribution needs at least one entry: raise ``ValueError`` for an axis of length 0."""
    if math.prod([shape[a] for a in axes]) == 0:
        msg = (
            f"{func}: the distribution axis {_axes_shown(axes, len(shape))} of shape {shape} "
            "has no entries, so there is no distribution"
        )
        raise ValueError(msg)


def expand_to(x: Array, ndim: int, xp: Namespace) -> Array:
    """``x`` with leading axes of size 1 added so that it has ``ndim`` axes (a view)."""
    if x.ndim == ndim:
        return x
    return xp.reshape(x, (1,) * (ndim - x.ndim) + tuple(x.shape))


def first_true(mask: Array, xp: Namespace) -> tuple[int, ...]:
    """Index of the first True of ``mask`` in C order (``mask`` holds at least one)."""
    flat = xp.reshape(xp.astype(mask, xp.int8), (-1,))
    position = int(xp.argmax(flat))
    index = []
    for size in reversed(tuple(mask.shape)):
        position, rest = divmod(position, size)
        index.append(rest)
    return tuple(reversed(index))


def show_index(index: tuple[int, ...]) -> str:
    return str(index[0]) if len(index) == 1 else str(index)


def check_probabilities(name: str, x: Array, xp: Namespace) -> None:
    """Raise ``ValueError`` at the first negative, NaN or infinite entry of ``x``."""
    if x.ndim == 0:
        x = xp.reshape(x, (1,))
    # Two reductions, no full-size temporary, answer for valid input; the search for the
    # first bad entry runs only when there is one.
    if math.prod(x.shape) == 0 or not bool(bad_probability_rows(x, None, xp)):
        return
    bad = ~(xp.isfinite(x) & (x >= 0))
    index = first_true(bad, xp)
    value = float(x[index])
    kind = "a NaN" if math.isnan(value) else "an infinite" if math.isinf(value) else "a negative"
    msg = (
        f"{name} has {kind} entry ({value!r}) at index {show_index(index)}; "
        "probabilities must be finite and non-negative"
    )
    raise ValueError(msg)


# The widest float whose rounding a normalised row may carry: rows are often normalised in
# float32 (a softmax on a GPU, a float32 model) and only then cast to float64.
_NORMALISED_IN = "float32"


def sum_tolerance(dtype: Any, n: int, xp: Namespace) -> float:
    """How far off 1 a row of ``n`` entries of ``dtype`` may sum and still count as normalised.

    The table, with ``eps`` the machine epsilon of the dtype (docs/index.md, "Validation"):

    - 16-bit floats (float16, bfloat16): ``4*eps``. Each entry of a row normalised in its own
      dtype is rounded once (``eps/2`` relative, at most ``eps/2`` of the row's sum of 1), and
      the sum it was divided by is rounded once more; libraries accumulate such sums in
      float32, so the error does not grow with ``n``. Measured on softmaxes and ``p / p.sum()``
      rows of PyTorch and NumPy: at most ``0.62*eps``.
    - float32: ``eps*(8 + 4*sqrt(n))``: the entries' rounding and that of a float32 sum, which
      grows like ``sqrt(n)`` ulps for a pairwise or blocked sum.
    - float64 and wider: float32's value, so that a row normalised in float32 and then cast up
      passes (it is off 1 by a float32 rounding, far above float64's own).

    Counts, logits or forgotten softmaxes are off 1 by far more than any of these.
    """
    info = xp.finfo(dtype)
    if info.bits <= 16:
        return 4.0 * float(info.eps)
    eps = float(np.finfo(_NORMALISED_IN).eps)
    return eps * (8.0 + 4.0 * math.sqrt(max(n, 1)))


def _row_sums(
    x: Array, axes: tuple[int, ...], keepdims: bool, xp: Namespace
) -> tuple[Array, Array, float]:
    """The sums of ``x``'s rows along ``axes``, whether each is off 1 (or NaN), and the
    tolerance of :func:`sum_tolerance`.

    The sums accumulate in the compute dtype (float32 at least, so bfloat16 rows are summed
    in float32) without a cast copy of ``x``: the reduction converts as it reads.
    """
    tol = sum_tolerance(x.dtype, math.prod([x.shape[a] for a in axes]), xp)
    work = _dtypes.compute_dtype(xp, x.dtype, _compat.device(x))
    sums = xp.sum(x, axis=axes, keepdims=keepdims, dtype=work)
    return sums, ~(xp.abs(sums - 1) <= tol), tol


def check_normalised(name: str, x: Array, axes: tuple[int, ...], xp: Namespace) -> None:
    """Raise ``ValueError`` at the first row of ``x`` along ``axes`` not summing to 1."""
    sums, bad, tol = _row_sums(x, axes, False, xp)
    if bad.ndim == 0:
        bad = xp.reshape(bad, (1,))
        sums = xp.reshape(sums, (1,))
    if not bool(xp.any(bad)):
        return
    index = first_true(bad, xp)
    value = float(sums[index])
    shown = f"the row at index {show_index(index)}" if x.ndim > len(axes) else "it"
    msg = (
        f"{name} is not normalised along axis {_axes_shown(axes, x.ndim)}: {shown} sums to "
        f"{value!r}, off 1 by more than {tol:.2g}; divide by the sum, or pass validate=False"
    )
    raise ValueError(msg)


# The lazy forms of the checks: masks shaped like a reduction over ``axes``, never read here,
# built from row reductions alone (no temporary of the input's size). Each condition is False
# for NaN, which the standard's min, max and sum propagate, so NaN counts as bad.


def unnormalised_rows(x: Array, axes: tuple[int, ...], keepdims: bool, xp: Namespace) -> Array:
    """Rows of ``x`` not within :func:`sum_tolerance` of 1: what :func:`check_normalised`
    refuses."""
    return _row_sums(x, axes, keepdims, xp)[1]


def bad_probability_rows(
    x: Array, axes: tuple[int, ...] | None, xp: Namespace, keepdims: bool = False
) -> Array:
    """Rows with a negative, NaN or infinite entry: what :func:`check_probabilities` refuses.
    ``axes=None`` takes the whole array."""
    low, high = xp.min(x, axis=axes, keepdims=keepdims), xp.max(x, axis=axes, keepdims=keepdims)
    return ~((low >= 0) & (high < xp.inf))


def bad_logit_rows(x: Array, axes: tuple[int, ...], xp: Namespace, keepdims: bool = False) -> Array:
    """Rows with a NaN or ``+inf`` logit, or with no finite one: what :func:`check_logits`
    refuses."""
    peak = xp.max(x, axis=axes, keepdims=keepdims)
    return ~((peak > -xp.inf) & (peak < xp.inf))


def check_logits(name: str, x: Array, axes: tuple[int, ...], xp: Namespace) -> None:
    """Raise ``ValueError`` at a NaN or ``+inf`` logit, or a row with no finite logit."""
    if x.ndim == 0:
        x = xp.reshape(x, (1,))
    # one reduction answers for valid input; the searches below run only when it says no
    if not bool(xp.any(bad_logit_rows(x, axes, xp))):
        return
    bad = xp.isnan(x) | (x == xp.inf)
    if bool(xp.any(bad)):
        index = first_true(bad, xp)
        value = float(x[index])
        kind = "a NaN" if math.isnan(value) else "an infinite"
        msg = (
            f"{name} has {kind} entry ({value!r}) at index {show_index(index)}; logits must be "
            "finite or -inf (a zero probability)"
        )
        raise ValueError(msg)
    empty = ~xp.any(x > -xp.inf, axis=axes)
    if empty.ndim == 0:
        empty = xp.reshape(empty, (1,))
    if bool(xp.any(empty)):
        index = first_true(empty, xp)
        shown = f"the row at index {show_index(index)}" if x.ndim > len(axes) else "the row"
        msg = f"{name}: {shown} has no finite logit, so it is no distribution"
        raise ValueError(msg)


def _axes_shown(axes: tuple[int, ...], ndim: int) -> str:
    negative = tuple(a - ndim for a in axes)
    return str(negative[0]) if len(negative) == 1 else str(negative)


def check_base(base: float | None) -> float:
    """``log(base)``, which divides nats into ``base`` units (1 for ``base=None``)."""
    if base is None:
        return 1.0
    try:
        value = float(base)
    except (TypeError, ValueError):
        msg = f"base must be a number or None, not {base!r}"
        raise TypeError(msg) from None
    if not (value > 0 and math.isfinite(value) and value != 1):
        msg = f"base must be finite, positive and not 1, got {base!r}"
        raise ValueError(msg)
    return math.log(value)


def check_values(
    inputs: Sequence[str],
    checks: Collection[str],
    arrays: Sequence[Array],
    shape: tuple[int, ...],
    axes: tuple[int, ...],
    xp: Namespace,
    readable: Sequence[bool] | None = None,
) -> None:
    """The value ``checks`` (names of :mod:`kldiv._table`) on the ``arrays`` called
    ``inputs``, broadcast to ``shape``, in the order of the inputs, so that the first bad
    argument is the one named; arrays ``readable`` says are not (default: all are)."""
    for i, (arg, x) in enumerate(zip(inputs, arrays, strict=True)):
        if readable is not None and not readable[i]:
            continue
        if LOGITS in checks:
            check_logits(arg, expand_to(x, len(shape), xp), axes, xp)
        if VALUES in checks:
            check_probabilities(arg, x, xp)
        if NORMALISED in checks and axes:
            check_normalised(arg, expand_to(x, len(shape), xp), axes, xp)
