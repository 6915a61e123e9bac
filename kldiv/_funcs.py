"""The public divergence functions: docstrings, validation, then dispatch.

Each function checks its input here, once, and hands the arrays to the backend that
:mod:`kldiv._dispatch` picks for their library. Results are arrays of the inputs' library,
dtype and device.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np

from kldiv import _compat, _conventions, _dispatch
from kldiv import _validation as v
from kldiv._table import DIVERGENCES, NORMALISED, Divergence
from kldiv._typing import Array, Axis, Namespace


def _call(
    name: str,
    arrays: Sequence[object],
    *,
    axis: Axis = None,
    keepdims: bool = False,
    base: float | None = None,
    validate: bool = True,
    reduction: str = "none",
    weights: Array | None = None,
    normalize: bool = False,
    where: Array | None = None,
) -> Array:
    """Check the arguments of the function ``name`` of :mod:`kldiv._table`, run the
    implementation :mod:`kldiv._dispatch` picks, and finish its result.

    ``base`` is checked first, so that a bad one fails before any work on the arrays. Shape
    and dtype checks always run here; the value checks run here unless the implementation
    fuses them into its own pass over the data. Arrays whose values cannot be read (lazy
    arrays, traced or fake tensors) are not checked: what the checks would refuse gives NaN
    instead, bad entries by the arithmetic itself, rows off 1 by :func:`_finish`.
    """
    row = DIVERGENCES[name]
    divisor = v.check_base(base) if row.base else 1.0
    xp, checked = v.namespace(row.inputs, arrays)
    impl = _dispatch.implementation(name, xp)
    for arg, x in zip(row.inputs, checked, strict=True):
        v.check_floating(arg, x, xp)
    shape = v.broadcast_shape(row.inputs, [tuple(x.shape) for x in checked])
    axes: tuple[int, ...] = ()
    if row.reduces:
        axes = v.normalize_axis(axis, len(shape), name)
        v.check_distribution_axes(row.inputs, checked, shape, axes)
        v.check_not_empty(name, shape, axes)
    readable = [_compat.values_are_readable(x) for x in checked] if validate else []
    if validate:
        v.check_values(row.inputs, row.checks - impl.fused, checked, shape, axes, xp, readable)
    options = {"axes": axes, "keepdims": keepdims} if row.reduces else {}
    out = impl.func(*checked, validate=validate, xp=xp, **options)
    fused = impl.fused
    if out is NotImplemented:  # declined by the fast path: the generic code, fully checked
        fused = frozenset()
        if validate:
            v.check_values(row.inputs, impl.fused & row.checks, checked, shape, axes, xp, readable)
        out = _dispatch.generic(name).func(*checked, validate=validate, xp=xp, **options)
    unread: list[Array] = []
    if validate and axes and NORMALISED in row.checks - fused:
        # what nothing checked: rows of values that could not be read
        unread = [
            v.expand_to(x, len(shape), xp)
            for x, ok in zip(checked, readable, strict=True)
            if not ok
        ]
    return _finish(out, row, unread, axes, keepdims, divisor, xp)


def _finish(
    out: Array,
    row: Divergence,
    unread: Sequence[Array],
    axes: tuple[int, ...],
    keepdims: bool,
    divisor: float,
    xp: Namespace,
) -> Array:
    """``out`` NaN where an unread distribution is off 1, then ``row.finish``, then divided
    by ``divisor`` (``log(base)``, from :func:`kldiv._validation.check_base`), as an array.

    The row sums join the lazy computation (one more reduction in Dask's graph or XLA's),
    so nothing is computed before the caller asks for the result.
    """
    for x in unread:
        bad = v.unnormalised_rows(x, axes, keepdims, xp)
        out = xp.where(bad, xp.full_like(out, xp.nan), out)
    if row.finish == "sqrt":
        # 0 stays 0 with a zero gradient, not the infinite derivative of sqrt at 0 (times a
        # zero cotangent: NaN); NaN stays NaN
        positive = out > 0
        out = xp.where(positive, xp.sqrt(xp.where(positive, out, xp.ones_like(out))), out)
    return _as_array(out if divisor == 1.0 else out / divisor)


_short: ModuleType | None = None


def _short_path() -> ModuleType:
    """:mod:`kldiv._backends.numpy._short`, imported on the first call that may take it, so
    that ``import kldiv`` loads no fast path (and no compiled module) until one is needed."""
    global _short
    if _short is None:
        from kldiv._backends.numpy import _short as module

        _short = module
    return _short


def _short_or_call(
    name: str,
    arrays: tuple[object, ...],
    axis: Axis,
    keepdims: bool,
    base: float | None,
    validate: bool,
) -> Array:
    """``name`` by the short path where it takes the call (plain NumPy arrays, CPU tensors
    or concrete JAX arrays on the CPU: :mod:`kldiv._backends.numpy._short`), else by
    :func:`_call`."""
    path = _short_path()
    if DIVERGENCES[name].logits:
        short = path.logits(arrays, axis, keepdims, base, validate)
    else:
        short = path.reduction(name, arrays, axis, keepdims, base, validate)
    if short is not None:
        return short
    return _call(name, arrays, axis=axis, keepdims=keepdims, base=base, validate=validate)


def _with_options(
    name: str,
    arrays: tuple[object, ...],
    axis: Axis,
    keepdims: bool,
    base: float | None,
    validate: bool,
    reduction: str,
    weights: object,
    normalize: bool,
    where: object,
) -> Array:
    """``name`` with the options of :mod:`kldiv._conventions` where any is given, else the
    plain call: by the short path where it takes it, else :func:`_call`."""
    row = DIVERGENCES[name]
    reduces = row.reduces
    if _conventions.is_plain(reduction, weights, normalize, where):
        if not reduces:
            return _call(name, arrays, validate=validate)
        return _short_or_call(name, arrays, axis, keepdims, base, validate)

    def plain(*xs: Array, axis: Axis = None, keepdims: bool = False) -> Array:
        if not reduces:
            return _call(name, xs, validate=validate)
        return _call(name, xs, axis=axis, keepdims=keepdims, base=base, validate=validate)

    return _as_array(
        _conventions.divergence(
            name,
            arrays,
            plain,
            axis=axis,
            keepdims=keepdims,
            reduction=reduction,
            weights=weights,
            normalize=normalize,
            where=where,
        )
    )


def _as_array(x: Array) -> Array:
    """NumPy reduces a whole array to a scalar (``np.float64``); every other result is an
    array already, and passing it through ``asarray`` would make PyTorch warn about
    ``requires_grad``."""
    return np.asarray(x) if isinstance(x, np.generic) else x


def rel_entr(
    p: Array,
    q: Array,
    *,
    validate: bool = True,
    reduction: str = "none",
    weights: Array | None = None,
    where: Array | None = None,
) -> Array:
    """Elementwise relative entropy ``p * log(p / q)``, with the definition's conventions.

    Parameters
    ----------
    p, q : array
        Non-negative real floating arrays of one library, broadcast against each other.
    validate : bool, optional
        Check that no entry is negative, NaN or infinite (default). Where values cannot be
        read (Dask, JAX under tracing, ``torch.vmap``), and with ``validate=False``, such an
        entry gives NaN instead.
    reduction : {"none", "sum", "mean", "batchmean"}, optional
        The terms as they are (default), their sum, or their mean (``"mean"`` and
        ``"batchmean"`` alike: every entry is a position), weighted by ``weights``.
    weights : array, optional
        A non-negative weight per entry, broadcast against the terms.
    where : array of bool, optional
        A mask broadcast against the inputs: a masked entry's term is 0, and it counts for
        nothing in the means.

    Returns
    -------
    array
        The broadcast shape, in the result dtype of ``p`` and ``q``: 0 where ``p == 0``
        (whatever ``q``), ``+inf`` where ``p > 0`` and ``q == 0``. Unchecked negative or NaN
        input gives NaN, never a number.

    See Also
    --------
    kl_div : the sum of these terms over a distribution axis.

    Notes
    -----
    ``p/q`` is never formed where it could overflow: near ``p == q`` the logarithm comes
    from a form exact relative to its small value (``log1p((p - q)/q)`` on NumPy and CuPy,
    ``2*atanh((p - q)/(p + q))`` elsewhere), and otherwise from ``log(p) - log(q)``. The
    arithmetic runs in float64 where the device has it.

    Examples
    --------
    >>> import numpy as np
    >>> import kldiv
    >>> kldiv.rel_entr(np.array([0.0, 0.5, 0.5]), np.array([0.0, 0.25, 0.0]))
    array([0.        , 0.34657359,        inf])
    """
    return _with_options(
        "rel_entr", (p, q), None, False, None, validate, reduction, weights, False, where
    )


def kl_div(
    p: Array,
    q: Array,
    *,
    axis: Axis = -1,
    keepdims: bool = False,
    base: float | None = None,
    validate: bool = True,
    reduction: str = "none",
    weights: Array | None = None,
    normalize: bool = False,
    where: Array | None = None,
) -> Array:
    """Kullback-Leibler divergence ``KL(p || q) = sum(p * log(p / q))`` along ``axis``.

    Parameters
    ----------
    p, q : array
        Probability distributions along ``axis``: real floating arrays of one library and
        device, broadcast against each other (one ``q`` against a batch of ``p``) except
        along ``axis``.
    axis : int, tuple of int or None, optional
        The axis, or axes taken together, that each distribution lies along. Default -1;
        None takes the whole array as one distribution.
    keepdims : bool, optional
        Keep the reduced axes with size 1.
    base : float, optional
        Logarithm base: None for nats (default), 2 for bits.
    validate : bool, optional
        Check that every entry is finite and non-negative and that every distribution sums to
        1 within a tolerance fitted to its dtype (the table in docs/index.md) (default).
        Where values cannot be read (Dask, JAX under tracing, ``torch.vmap``, meta and fake
        tensors) nothing can raise: a row the checks would refuse gives NaN instead. Shape
        and dtype checks always run. Unchecked negative, NaN or infinite entries give NaN.
    reduction : {"none", "sum", "mean", "batchmean"}, optional
        ``"none"`` (default): one value per distribution. ``"sum"``: their sum.
        ``"batchmean"``: their mean over every batch position (all axes but ``axis``; for
        ``(B, T, V)`` inputs, over ``B*T``, where PyTorch's ``batchmean`` divides by ``B``
        alone), weighted by ``weights``. ``"mean"``: PyTorch's ``mean``, the sum over the
        number of elements, distribution axes included (``batchmean`` over ``n``).
    weights : array, optional
        A non-negative weight per batch position, broadcast against the result: the values
        are multiplied by it, and ``batchmean`` is ``sum(w*kl)/sum(w)``.
    normalize : bool, optional
        Divide each distribution by its sum first, as ``scipy.stats.entropy`` does; integer
        and boolean counts are then accepted, promoted to the library's default floating
        dtype. Negative, NaN and infinite entries are still refused, and so is a
        distribution summing to 0.
    where : array of bool, optional
        A mask broadcast against the inputs: a masked (False) entry contributes nothing
        (a zero probability in both), and the checks see only the entries left. A
        distribution masked entirely gives NaN, and counts for nothing in ``"sum"`` and the
        means. The masked copies of the inputs take their size in memory.

    Returns
    -------
    array
        The divergences, in the result dtype of ``p`` and ``q``: ``+inf`` where some
        ``p > 0`` meets ``q == 0``; entries with ``p == 0`` contribute nothing. A 0-d array
        for ``reduction`` other than ``"none"``.

    Raises
    ------
    TypeError
        Arrays of two libraries, or a non-floating dtype.
    ValueError
        Shapes that do not broadcast, a negative or NaN entry, a row off 1 (with
        ``validate``), arrays on two devices.
    numpy.exceptions.AxisError
        ``axis`` out of range (both a ValueError and an IndexError).

    See Also
    --------
    kl_div_logits : the same from unnormalised log-probabilities.
    rel_entr : the elementwise terms.

    Notes
    -----
    Each term is computed as the non-negative ``q*phi(p/q)``, ``phi(r) = r*log(r) - r + 1``,
    and the exact mass difference ``sum(p - q)`` is added back, so near-identical
    distributions do not cancel. The arithmetic runs in float64 where the device has it.
    With ``validate``, a result below 0, which only rounding of the inputs' sums can make,
    is returned as 0.

    Examples
    --------
    >>> import numpy as np
    >>> import kldiv
    >>> p = np.array([[0.25, 0.1, 0.65], [0.8, 0.15, 0.05]])
    >>> q = np.array([[0.7, 0.2, 0.1], [0.15, 0.8, 0.05]])
    >>> kldiv.kl_div(p, q)
    array([0.88995184, 1.08808468])
    >>> kldiv.kl_div(np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5]), base=2)
    array(1.)
    >>> kldiv.kl_div(p, q, reduction="batchmean")
    array(0.98901826)
    >>> kldiv.kl_div(np.array([9, 8, 7]), np.array([1, 2, 3]), normalize=True)  # SciPy's
    array(0.14689152)
    >>> kldiv.kl_div(p, q, where=np.array([True, True, False]), normalize=True)
    array([0.01097712, 1.1453523 ])
    """
    return _with_options(
        "kl_div", (p, q), axis, keepdims, base, validate, reduction, weights, normalize, where
    )


def kl_div_logits(
    a: Array,
    b: Array,
    *,
    axis: Axis = -1,
    keepdims: bool = False,
    base: float | None = None,
    validate: bool = True,
    reduction: str = "none",
    weights: Array | None = None,
    normalize: bool = False,
    where: Array | None = None,
) -> Array:
    """``KL(softmax(a) || softmax(b))`` along ``axis``, computed in log space.

    Parameters
    ----------
    a, b : array
        Logits (unnormalised log-probabilities) or log-probabilities; ``-inf`` stands for a
        zero probability. Same rules of library, dtype and broadcasting as :func:`kl_div`.
    axis, keepdims, base
        As in :func:`kl_div`.
    validate : bool, optional
        Reject NaN and ``+inf`` entries and rows with no finite entry (default). Where values
        cannot be read, as in :func:`kl_div`, and with ``validate=False``, those give NaN.
    reduction, weights, where
        As in :func:`kl_div` (a masked logit is a zero probability, as ``-inf``).
        ``normalize`` is refused: logits need no normalising.

    Returns
    -------
    array
        The divergences, in the result dtype of ``a`` and ``b``.

    Notes
    -----
    Both log-softmaxes come from a max-shifted log-sum-exp, and each term
    ``p*d - q*expm1(d)`` (``d = log p - log q``) is non-negative, so logit gaps of 1e4 in
    float32, where ``log(softmax(a))`` is ``-inf``, give finite, accurate results.

    Examples
    --------
    >>> import numpy as np
    >>> import kldiv
    >>> a = np.array([0.0, 1e4], dtype=np.float32)
    >>> b = np.array([0.0, 0.0], dtype=np.float32)
    >>> kldiv.kl_div_logits(a, b)
    array(0.6931472, dtype=float32)
    """
    return _with_options(
        "kl_div_logits",
        (a, b),
        axis,
        keepdims,
        base,
        validate,
        reduction,
        weights,
        normalize,
        where,
    )


def entropy(
    p: Array,
    *,
    axis: Axis = -1,
    keepdims: bool = False,
    base: float | None = None,
    validate: bool = True,
    reduction: str = "none",
    weights: Array | None = None,
    normalize: bool = False,
    where: Array | None = None,
) -> Array:
    """Shannon entropy ``H(p) = -sum(p * log(p))`` along ``axis``, with ``0*log(0) = 0``.

    Parameters
    ----------
    p : array
        Probability distributions along ``axis``.
    axis, keepdims, base, validate, reduction, weights, normalize, where
        As in :func:`kl_div`.

    Returns
    -------
    array
        The entropies, in ``p``'s dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import kldiv
    >>> kldiv.entropy(np.array([0.5, 0.25, 0.25, 0.0]), base=2)
    array(1.5)
    """
    return _with_options(
        "entropy", (p,), axis, keepdims, base, validate, reduction, weights, normalize, where
    )


def cross_entropy(
    p: Array,
    q: Array,
    *,
    axis: Axis = -1,
    keepdims: bool = False,
    base: float | None = None,
    validate: bool = True,
    reduction: str = "none",
    weights: Array | None = None,
    normalize: bool = False,
    where: Array | None = None,
) -> Array:
    """Cross-entropy ``H(p, q) = -sum(p * log(q))`` along ``axis``.

    ``H(p, q) = H(p) + KL(p || q)``. Entries with ``p == 0`` contribute nothing; ``p > 0``
    against ``q == 0`` gives ``+inf``.

    Parameters
    ----------
    p, q : array
        Probability distributions along ``axis``, as in :func:`kl_div`.
    axis, keepdims, base, validate, reduction, weights, normalize, where
        As in :func:`kl_div`.

    Returns
    -------
    array
        The cross-entropies, in the result dtype of ``p`` and ``q``.

    Examples
    --------
    >>> import numpy as np
    >>> import kldiv
    >>> kldiv.cross_entropy(np.array([0.5, 0.5]), np.array([0.25, 0.75]), base=2)
    array(1.20751875)
    """
    return _with_options(
        "cross_entropy",
        (p, q),
        axis,
        keepdims,
        base,
        validate,
        reduction,
        weights,
        normalize,
        where,
    )


def js_div(
    p: Array,
    q: Array,
    *,
    axis: Axis = -1,
    keepdims: bool = False,
    base: float | None = None,
    validate: bool = True,
    reduction: str = "none",
    weights: Array | None = None,
    normalize: bool = False,
    where: Array | None = None,
) -> Array:
    """Jensen-Shannon divergence ``(KL(p || m) + KL(q || m)) / 2``, ``m = (p + q) / 2``.

    Symmetric, finite, and between 0 and ``log(2)`` (1 in base 2). Its square root is the
    Jensen-Shannon distance.

    Parameters
    ----------
    p, q : array
        Probability distributions along ``axis``, as in :func:`kl_div`.
    axis, keepdims, base, validate, reduction, weights, normalize, where
        As in :func:`kl_div`.

    Returns
    -------
    array
        The divergences, in the result dtype of ``p`` and ``q``.

    Examples
    --------
    >>> import numpy as np
    >>> import kldiv
    >>> kldiv.js_div(np.array([1.0, 0.0]), np.array([0.0, 1.0]), base=2)
    array(1.)
    """
    return _with_options(
        "js_div", (p, q), axis, keepdims, base, validate, reduction, weights, normalize, where
    )


def hellinger(
    p: Array,
    q: Array,
    *,
    axis: Axis = -1,
    keepdims: bool = False,
    validate: bool = True,
    reduction: str = "none",
    weights: Array | None = None,
    normalize: bool = False,
    where: Array | None = None,
) -> Array:
    """Hellinger distance ``sqrt(sum((sqrt(p) - sqrt(q))**2) / 2)`` along ``axis``.

    A metric on distributions, between 0 and 1, with ``H**2 <= TV <= sqrt(2)*H`` against
    :func:`total_variation`.

    Parameters
    ----------
    p, q : array
        Probability distributions along ``axis``, as in :func:`kl_div`.
    axis, keepdims, validate, reduction, weights, normalize, where
        As in :func:`kl_div`.

    Returns
    -------
    array
        The distances, in the result dtype of ``p`` and ``q``.

    Notes
    -----
    Each difference is taken as ``(p - q)/(sqrt(p) + sqrt(q))``, exact to a rounding
    relative to its value, so near-identical distributions keep their digits.

    Examples
    --------
    >>> import numpy as np
    >>> import kldiv
    >>> kldiv.hellinger(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    array(1.)
    >>> kldiv.hellinger(np.array([0.5, 0.5]), np.array([0.5, 0.5]))
    array(0.)
    """
    return _with_options(
        "hellinger", (p, q), axis, keepdims, None, validate, reduction, weights, normalize, where
    )


def total_variation(
    p: Array,
    q: Array,
    *,
    axis: Axis = -1,
    keepdims: bool = False,
    validate: bool = True,
    reduction: str = "none",
    weights: Array | None = None,
    normalize: bool = False,
    where: Array | None = None,
) -> Array:
    """Total variation distance ``sum(|p - q|) / 2`` along ``axis``.

    The largest difference in probability that ``p`` and ``q`` give one event: between 0
    and 1. Pinsker's inequality bounds it by KL: ``TV <= sqrt(KL(p || q) / 2)``.

    Parameters
    ----------
    p, q : array
        Probability distributions along ``axis``, as in :func:`kl_div`.
    axis, keepdims, validate, reduction, weights, normalize, where
        As in :func:`kl_div`.

    Returns
    -------
    array
        The distances, in the result dtype of ``p`` and ``q``.

    Examples
    --------
    >>> import numpy as np
    >>> import kldiv
    >>> kldiv.total_variation(np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5]))
    array(0.5)
    """
    return _with_options(
        "total_variation",
        (p, q),
        axis,
        keepdims,
        None,
        validate,
        reduction,
        weights,
        normalize,
        where,
    )


__all__ = [
    "cross_entropy",
    "entropy",
    "hellinger",
    "js_div",
    "kl_div",
    "kl_div_logits",
    "rel_entr",
    "total_variation",
]
