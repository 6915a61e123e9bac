"""Closed-form ``KL(p || q)`` between two distributions of one family, from their parameters.

Each function is named after the family and takes the parameters of ``p``, then those of
``q``: arrays of one array-API library (NumPy, CuPy, PyTorch, JAX, Dask, array_api_strict),
or Python numbers and sequences, broadcast against each other, so that one call computes a
batch. The result is an array of that library, in the result dtype of the parameters and on
their device; the arithmetic runs in float64 where the device has it, as in the rest of
kldiv. Autodiff (``torch.autograd``, ``jax.grad``) and ``jax.jit`` go through every function.

Parameter dtypes: arrays of a library must have a real floating dtype (``TypeError`` for
integer, bool and complex arrays, as :func:`kldiv.kl_div`); Python numbers and sequences
take the floating dtype of the arrays beside them, float64 NumPy when there are none, so
``normal(0, 1, 1, 2)`` works.

Invalid parameters (a scale, rate or concentration that is not positive, a probability out
of its interval, a Cholesky factor with a diagonal entry that is not positive) raise
``ValueError`` naming the argument and its first bad entry where values can be read, and
give NaN where they cannot (Dask, JAX under ``jit`` or ``grad``, ``torch.vmap``).

Every formula is written so that it keeps its digits when ``p`` and ``q`` are nearly the
same, where the textbook forms subtract numbers that agree in most of their digits. Three
pieces do it, each derived beside its code:

- :func:`_log_ratio`: ``log(a/b)`` exact relative to its value near ``a == b``;
- :func:`_expm1_minus`: ``f(x) = exp(x) - 1 - x >= 0``, exact for small ``x``;
- :func:`_entr_term`: ``t(a, b) = a*log(a/b) - a + b >= 0``, exact for ``a`` near ``b``.

The families of special functions (:func:`gamma`, :func:`beta`, :func:`dirichlet`) call the
array library's own ``gammaln``, ``digamma`` and ``polygamma`` (:func:`_special`).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from kldiv import _compat, _dtypes, _funcs
from kldiv import _validation as v
from kldiv._typing import Array, Axis, Namespace

__all__ = [
    "bernoulli",
    "bernoulli_logits",
    "beta",
    "categorical",
    "categorical_logits",
    "dirichlet",
    "exponential",
    "gamma",
    "geometric",
    "laplace",
    "mvn",
    "mvn_cov",
    "mvn_diag",
    "normal",
    "poisson",
    "standard_normal",
    "uniform",
]

# ---------------------------------------------------------------------------------------------
# Arguments: conversion, dtypes, and the value checks.


class _Params(NamedTuple):
    xp: Namespace
    dtype: Any  # the result dtype
    arrays: list[Array]  # in the compute dtype
    readable: list[bool]  # whether each one's values may be read (not lazy)


def _floating(names: Sequence[str], arrays: Sequence[object]) -> tuple[Namespace, list[Array]]:
    """The namespace of ``arrays``, and the arrays with Python numbers and sequences made
    arrays of its library.

    Those that ``asarray`` makes integer or bool take the result dtype of the library's
    arrays beside them (float64 NumPy without any): a parameter written ``0`` means the
    number, not an integer dtype. Arrays of a library must be floating, as everywhere in
    kldiv.
    """
    xp, converted = v.namespace(names, arrays)
    given = [_compat.is_array_api_obj(a) for a in arrays]
    for name, x, real in zip(names, converted, given, strict=True):
        if real:
            v.check_floating(name, x, xp)
    real_arrays = [x for x, real in zip(converted, given, strict=True) if real]
    floating = xp.result_type(*real_arrays) if real_arrays else xp.float64
    return xp, [
        x if real or xp.isdtype(x.dtype, "real floating") else xp.astype(x, floating)
        for x, real in zip(converted, given, strict=True)
    ]


def _params(names: Sequence[str], arrays: Sequence[object], *, broadcast: bool = True) -> _Params:
    """The namespace, result dtype and compute-dtype arrays of the parameters ``arrays``
    (:func:`_floating`), broadcast-checked unless ``broadcast`` is False."""
    xp, converted = _floating(names, arrays)
    if broadcast:
        v.broadcast_shape(names, [tuple(x.shape) for x in converted])
    dtype = xp.result_type(*converted)
    work = _dtypes.compute_dtype(xp, dtype, _compat.device(converted[0]))
    readable = [_compat.values_are_readable(x) for x in converted]
    return _Params(xp, dtype, [xp.astype(x, work) for x in converted], readable)


class _Guard:
    """The value checks of one call: each raises where the values can be read, and is kept as
    a mask otherwise, to make the result NaN where it fails (:meth:`nan_where_bad`)."""

    def __init__(self, xp: Namespace) -> None:
        self.xp = xp
        self.bad: list[Array] = []

    def require(
        self,
        name: str,
        values: Array,
        ok: Array,
        expected: str,
        *,
        readable: bool,
        bad: Array | None = None,
        entry: str = "entry",
    ) -> bool:
        """Check that ``ok`` (shaped like ``values``) holds everywhere; True when it could
        not be read, and the caller must then replace the bad entries by harmless ones, so
        that no warning and no NaN gradient comes from them. ``bad`` is what is kept then,
        shaped like the result (default ``~ok``)."""
        xp = self.xp
        if not readable:
            self.bad.append(~ok if bad is None else bad)
            return True
        if math.prod(ok.shape) == 0 or bool(xp.all(ok)):
            return False
        if ok.ndim == 0:
            msg = f"{name} must be {expected}, got {float(values)!r}"
            raise ValueError(msg)
        index = v.first_true(~ok, xp)
        value = float(values[index])
        msg = f"{name} must be {expected}; {entry} {v.show_index(index)} is {value!r}"
        raise ValueError(msg)

    def positive(self, name: str, x: Array, readable: bool) -> Array:
        """``x``, checked to be > 0 (NaN fails), with bad entries made 1 where unread."""
        ok = x > 0
        return self._clean(x, ok, self.require(name, x, ok, "> 0", readable=readable))

    def unit(self, name: str, x: Array, readable: bool, *, zero: bool = True) -> Array:
        """``x``, checked to lie in [0, 1] (``(0, 1]`` without ``zero``)."""
        ok = ((x >= 0) if zero else (x > 0)) & (x <= 1)
        interval = "in [0, 1]" if zero else "in (0, 1]"
        return self._clean(x, ok, self.require(name, x, ok, interval, readable=readable), 0.5)

    def _clean(self, x: Array, ok: Array, unread: bool, fill: float = 1.0) -> Array:
        if not unread:
            return x
        return self.xp.where(ok, x, self.xp.full_like(x, fill))

    def nan_where_bad(self, out: Array) -> Array:
        """``out`` NaN where a kept check fails; the checks are then done with (a function
        that sums terms calls this before the sum, and the masks have the terms' shape)."""
        for bad in self.bad:
            out = self.xp.where(bad, self.xp.full_like(out, self.xp.nan), out)
        self.bad = []
        return out


def _checked(
    par: _Params, names: Sequence[str], positive: Sequence[str]
) -> tuple[_Guard, list[Array]]:
    """A guard for the checks of the parameters ``par`` (named ``names``), and their arrays
    with those named in ``positive`` checked to be > 0, in order."""
    guard = _Guard(par.xp)
    values = [
        guard.positive(name, x, readable) if name in positive else x
        for name, x, readable in zip(names, par.arrays, par.readable, strict=True)
    ]
    return guard, values


def _finish(out: Array, p: _Params, guard: _Guard) -> Array:
    """``out`` with NaN where an unread check failed, in the result dtype, as an array."""
    return _funcs._as_array(p.xp.astype(guard.nan_where_bad(out), p.dtype))


def _sum(x: Array, axis: Axis, keepdims: bool, func: str, xp: Namespace) -> Array:
    axes = v.normalize_axis(axis, x.ndim, func)
    return xp.sum(x, axis=axes, keepdims=keepdims)


# ---------------------------------------------------------------------------------------------
# The cancellation-free pieces.


def _horner(x: Array, coefficients: Sequence[float]) -> Array:
    """``c0 + c1*x + c2*x**2 + ...``."""
    out = coefficients[-1] + 0 * x
    for c in coefficients[-2::-1]:
        out = c + x * out
    return out


# Taylor coefficients of (exp(x) - 1 - x)/x**2 = sum x**j/(j + 2)!: for |x| < 1/2 the first
# neglected term, x**15/17!, is below 1e-17 of the sum (which is above 1/3).
_EXPM1_MINUS = tuple(1.0 / math.factorial(j + 2) for j in range(15))
# |x| from which expm1(x) - x is computed as written: its rounding, eps*|expm1(x)|, is then
# at most about 2*eps of the difference.
_EXPM1_MINUS_SERIES = 0.5


def _expm1_minus(x: Array, xp: Namespace) -> Array:
    """``f(x) = exp(x) - 1 - x``, non-negative, exact to a few roundings relative to itself.

    ``expm1(x) - x`` cancels for small ``x`` (``f(x) ~ x**2/2``: ``1e-16`` for ``x = 1e-8``,
    below the rounding of ``expm1(x)``); the Taylor series there is a sum of terms shrinking
    by ``|x|/3`` or faster, so it has no cancellation. Where ``exp(x)`` overflows the
    dtype, ``f`` is ``+inf`` with an infinite derivative, without an overflow warning.
    """
    small = xp.abs(x) < _EXPM1_MINUS_SERIES
    big = x > math.log(float(xp.finfo(x.dtype).max))
    # each branch gets harmless operands where it is not taken, so that its derivative
    # there (times a zero cotangent) cannot be NaN
    xs = xp.where(small, x, xp.zeros_like(x))
    series = xs * xs * _horner(xs, _EXPM1_MINUS)
    xl = xp.where(small | big, xp.ones_like(x), x)
    xb = xp.where(big, x, xp.ones_like(x))
    direct = xp.where(big, xb * xp.inf, xp.expm1(xl) - xl)
    return xp.where(small, series, direct)


# |s| = |a - b|/(a + b) below this takes the atanh forms: a/b in (1/3, 3).
_NEAR = 0.5


def _log_ratio(a: Array, b: Array, xp: Namespace) -> Array:
    """``log(a/b)`` for positive ``a`` and ``b``, exact relative to its value.

    ``log(a) - log(b)`` loses the digits of a small ratio's logarithm to the rounding of the
    larger logarithms. With ``s = (a - b)/(a + b)``, exact to a rounding near ``a == b``
    (``a - b`` is then exact), ``a/b = (1 + s)/(1 - s)`` and ``log(a/b) = 2*atanh(s)``.
    Away from ``a == b`` the difference of logarithms has no cancellation, and never forms
    ``a/b``, which overflows for tiny ``b``.
    """
    s = (a - b) / (a + b)
    near = xp.abs(s) < _NEAR
    sn = xp.where(near, s, xp.zeros_like(s))
    one = xp.ones_like(s)
    fa, fb = xp.where(near, one, a), xp.where(near, one, b)
    return xp.where(near, 2 * xp.atanh(sn), xp.log(fa) - xp.log(fb))


# Taylor coefficients of (atanh(s) - s)/s**3 in s**2: 1/3, 1/5, ...; for |s| < 0.1 the first
# neglected term, s**18/21, is below 1e-18 of the sum.
_ATANH_MINUS = tuple(1.0 / (2 * j + 3) for j in range(9))
_ATANH_MINUS_SERIES = 0.1


def _atanh_minus(s: Array, xp: Namespace) -> Array:
    """``atanh(s) - s`` for ``|s| < 1/2``, exact relative to itself near 0 (series), and
    to ``eps*|s|`` (a rounding of ``atanh(s)``) from ``|s| = 0.1``."""
    small = xp.abs(s) < _ATANH_MINUS_SERIES
    ss = xp.where(small, s, xp.zeros_like(s))
    series = ss * ss * ss * _horner(ss * ss, _ATANH_MINUS)
    sl = xp.where(small, xp.zeros_like(s), s)
    return xp.where(small, series, xp.atanh(sl) - sl)


def _log0(x: Array, xp: Namespace) -> Array:
    """``log(x)`` for ``x >= 0``, ``-inf`` at 0, without a warning or a NaN gradient there."""
    positive = x > 0
    return xp.where(positive, xp.log(xp.where(positive, x, xp.ones_like(x))), -xp.inf + 0 * x)


def _entr_term(a: Array, b: Array, log_a: Array, log_b: Array, diff: Array, xp: Namespace) -> Array:
    """``t(a, b) = a*log(a/b) - a + b >= 0`` for ``a, b >= 0``, with ``t(0, b) = b`` and
    ``t(a, 0) = +inf`` for ``a > 0``.

    The caller gives ``log(a)`` and ``log(b)`` (finite where ``a`` or ``b`` underflows but
    its logarithm does not, as for a sigmoid of logits) and ``diff = a - b`` (exact where a
    subtraction of ``a`` and ``b`` would not be). The textbook ``a*log(a/b) - a + b``
    cancels to ``(a - b)**2/(2b)`` for ``a`` near ``b``. With ``s = diff/(a + b)``,
    ``a = (a + b)(1 + s)/2``, ``b = (a + b)(1 - s)/2`` and ``log(a/b) = 2*atanh(s)``::

        t = (a + b)*((1 + s)*atanh(s) - s) = (a + b)*(s**2 + (1 + s)*(atanh(s) - s))

    where ``s**2`` carries the value and ``atanh(s) - s ~ s**3/3`` (:func:`_atanh_minus`) is
    a correction of relative size ``s``. Away from ``a == b``, ``a*(log(a) - log(b)) - diff``
    does not cancel.
    """
    total = a + b
    total_safe = xp.where(total > 0, total, xp.ones_like(total))
    s = diff / total_safe
    near = (xp.abs(s) < _NEAR) & (total > 0)
    sn = xp.where(near, s, xp.zeros_like(s))
    near_term = total * (sn * sn + (1 + sn) * _atanh_minus(sn, xp))
    positive = a > 0
    one = xp.ones_like(a)
    a_safe = xp.where(positive, a, one)
    log_a_safe = xp.where(positive, log_a, 0 * one)
    far = xp.where(positive, a_safe * (log_a_safe - log_b), 0 * one) - diff
    return xp.where(near, near_term, far)


# ---------------------------------------------------------------------------------------------
# The families.


def normal(loc_p: Array, scale_p: Array, loc_q: Array, scale_q: Array, /) -> Array:
    """``KL(N(loc_p, scale_p**2) || N(loc_q, scale_q**2))`` for univariate normals.

    Parameters
    ----------
    loc_p, scale_p, loc_q, scale_q : array
        Means and standard deviations (> 0), broadcast against each other.

    Returns
    -------
    array
        The divergences, in the broadcast shape and the result dtype of the parameters.

    Raises
    ------
    ValueError
        A scale that is not > 0 (where values can be read; NaN in the result elsewhere).

    Notes
    -----
    With ``r = scale_p/scale_q`` (Bishop, *Pattern Recognition and Machine Learning*, 2006,
    ex. 1.30; Kullback, *Information Theory and Statistics*, 1959)::

        KL = log(1/r) + (r**2 - 1)/2 + (loc_p - loc_q)**2/(2*scale_q**2)
           = (exp(2t) - 1 - 2t)/2 + ((loc_p - loc_q)/scale_q)**2/2,   t = log(r)

    Both terms are non-negative, ``t`` comes from :func:`_log_ratio` and ``exp(2t) - 1 - 2t``
    from :func:`_expm1_minus`, so near-identical normals keep every digit.

    Examples
    --------
    >>> from kldiv import distributions
    >>> distributions.normal(0.0, 1.0, 1.0, 2.0)
    array(0.44314718)
    """
    names = ("loc_p", "scale_p", "loc_q", "scale_q")
    p = _params(names, (loc_p, scale_p, loc_q, scale_q))
    guard, (mp, sp, mq, sq) = _checked(p, names, ("scale_p", "scale_q"))
    return _finish(_normal_terms(mp, sp, mq, sq, p.xp), p, guard)


def _normal_terms(mp: Array, sp: Array, mq: Array, sq: Array, xp: Namespace) -> Array:
    t = _log_ratio(sp, sq, xp)
    z = (mp - mq) / sq
    return 0.5 * _expm1_minus(2 * t, xp) + 0.5 * (z * z)


def standard_normal(
    loc: Array,
    /,
    *,
    log_var: Array | None = None,
    log_scale: Array | None = None,
    scale: Array | None = None,
    axis: Axis = -1,
    keepdims: bool = False,
) -> Array:
    """``KL(N(loc, diag(var)) || N(0, I))``: the latent loss of a variational autoencoder.

    Parameters
    ----------
    loc : array
        The means of the diagonal normal.
    log_var, log_scale, scale : array
        Exactly one of: the log-variances, the log standard deviations, or the standard
        deviations (> 0), broadcast against ``loc``.
    axis : int, tuple of int or None, optional
        The axes the dimensions of one normal lie along, summed over (default -1; None sums
        everything).
    keepdims : bool, optional
        Keep the summed axes with size 1.

    Returns
    -------
    array
        The divergences, in the result dtype of ``loc`` and the variance argument.

    Raises
    ------
    TypeError
        None or more than one of ``log_var``, ``log_scale``, ``scale``.
    ValueError
        A ``scale`` that is not > 0 (where values can be read).

    Notes
    -----
    Kingma and Welling, *Auto-Encoding Variational Bayes* (2014), appendix B::

        KL = -1/2 * sum(1 + log_var - loc**2 - exp(log_var))
           = 1/2 * sum((exp(log_var) - 1 - log_var) + loc**2)

    Both terms are non-negative; ``exp(v) - 1 - v`` comes from :func:`_expm1_minus`, exact
    near ``v = 0`` where the textbook sum cancels. ``scale`` enters as ``2*log(scale)``,
    never as ``log(scale**2)``, so a tiny scale whose square underflows still gives its
    finite divergence. The result and its gradient ``(exp(v) - 1)/2`` are finite wherever
    ``exp(v)`` is (float64 arithmetic: ``v < 709``, float32 inputs included).

    Examples
    --------
    >>> import numpy as np
    >>> from kldiv import distributions
    >>> mu = np.array([[0.0, 0.5], [1.0, -1.0]])
    >>> log_sd = np.array([[0.0, -1.0], [0.5, 0.0]])
    >>> distributions.standard_normal(mu, log_scale=log_sd)
    array([0.69266764, 1.35914091])
    >>> -0.5 * np.sum(1 + 2 * log_sd - mu**2 - np.exp(2 * log_sd), axis=-1)
    array([0.69266764, 1.35914091])
    """
    given = {
        name: x
        for name, x in (("log_var", log_var), ("log_scale", log_scale), ("scale", scale))
        if x is not None
    }
    if len(given) != 1:
        shown = ", ".join(given) or "none"
        msg = f"standard_normal takes exactly one of log_var, log_scale, scale; got {shown}"
        raise TypeError(msg)
    ((name, spread),) = given.items()
    p = _params(("loc", name), (loc, spread))
    xp, guard = p.xp, _Guard(p.xp)
    mu, x = p.arrays
    if name == "scale":
        x = 2 * xp.log(guard.positive("scale", x, p.readable[1]))
    elif name == "log_scale":
        x = 2 * x
    terms = 0.5 * (_expm1_minus(x, xp) + mu * mu)
    terms = guard.nan_where_bad(terms)
    return _finish(_sum(terms, axis, keepdims, "standard_normal", xp), p, guard)


def mvn_diag(
    loc_p: Array,
    scale_p: Array,
    loc_q: Array,
    scale_q: Array,
    /,
    *,
    axis: Axis = -1,
    keepdims: bool = False,
) -> Array:
    """KL between multivariate normals with diagonal covariances ``diag(scale**2)``.

    The sum of :func:`normal` over the dimensions along ``axis``: the parameters are
    broadcast, then summed over ``axis`` (default -1; a tuple, or None for all, also
    works), with ``keepdims`` as in :func:`kldiv.kl_div`.

    Examples
    --------
    >>> from kldiv import distributions
    >>> distributions.mvn_diag([0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [2.0, 1.0])
    array(0.44314718)
    """
    names = ("loc_p", "scale_p", "loc_q", "scale_q")
    p = _params(names, (loc_p, scale_p, loc_q, scale_q))
    guard, (mp, sp, mq, sq) = _checked(p, names, ("scale_p", "scale_q"))
    xp = p.xp
    terms = guard.nan_where_bad(_normal_terms(mp, sp, mq, sq, xp))
    return _finish(_sum(terms, axis, keepdims, "mvn_diag", xp), p, guard)


def mvn(loc_p: Array, scale_tril_p: Array, loc_q: Array, scale_tril_q: Array, /) -> Array:
    """KL between multivariate normals ``N(loc, L @ L.T)`` given by Cholesky factors ``L``.

    Parameters
    ----------
    loc_p, loc_q : array
        Means, shape ``(..., k)``.
    scale_tril_p, scale_tril_q : array
        Lower-triangular factors of the covariances, shape ``(..., k, k)``, with a positive
        diagonal; entries above the diagonal are not read. The batch dimensions (``...``) of
        all four broadcast against each other.

    Returns
    -------
    array
        The divergences, of the broadcast batch shape.

    Raises
    ------
    ValueError
        Shapes that do not fit, or a factor with a diagonal entry that is not > 0 (where
        values can be read).

    Notes
    -----
    With ``Sigma = L @ L.T``, ``d = loc_p - loc_q`` (Kullback, 1959; Rasmussen and
    Williams, *Gaussian Processes for Machine Learning*, 2006, A.23)::

        KL = (tr(Sigma_q^-1 Sigma_p) + d.T Sigma_q^-1 d - k + log det Sigma_q
              - log det Sigma_p) / 2

    ``M = L_q^-1 L_p`` is lower triangular with diagonal ``exp(t_i)``,
    ``t_i = log(L_p[i, i]/L_q[i, i])``, so ``tr(Sigma_q^-1 Sigma_p) = |M|_F**2`` and the
    log-determinants add ``-2*sum(t_i)``::

        KL = (sum_i (exp(2 t_i) - 1 - 2 t_i) + sum_{i > j} M[i, j]**2 + |L_q^-1 d|**2) / 2

    Every term is non-negative. ``M - I = L_q^-1 (L_p - L_q)`` and ``L_q^-1 d`` come from one
    triangular solve (never an inverse), so the off-diagonal entries are exact relative to
    their size when ``L_p`` is near ``L_q``; ``exp(2t) - 1 - 2t`` is :func:`_expm1_minus`.
    The solve is ``torch.linalg.solve_triangular`` for PyTorch,
    ``jax.scipy.linalg.solve_triangular`` for JAX, and forward substitution written against
    the array API standard elsewhere (``k`` steps, each a batched matrix product).

    Examples
    --------
    >>> import numpy as np
    >>> from kldiv import distributions
    >>> L = np.array([[1.0, 0.0], [0.5, 2.0]])
    >>> distributions.mvn(np.zeros(2), np.eye(2), np.array([1.0, 0.0]), L)
    array(0.88064718)
    """
    names = ("loc_p", "scale_tril_p", "loc_q", "scale_tril_q")
    p = _params(names, (loc_p, scale_tril_p, loc_q, scale_tril_q), broadcast=False)
    guard = _Guard(p.xp)
    out = _mvn(p, guard, names)
    return _finish(out, p, guard)


def _mvn_shapes(names: Sequence[str], arrays: Sequence[Array]) -> tuple[int, tuple[int, ...]]:
    """The dimension ``k`` and the broadcast batch shape of ``loc, L, loc, L``."""
    locs, trils = arrays[0::2], arrays[1::2]
    for name, x in zip(names[0::2], locs, strict=True):
        if x.ndim < 1:
            msg = f"{name} must have at least one axis (the dimensions), not shape ()"
            raise ValueError(msg)
    for name, x in zip(names[1::2], trils, strict=True):
        if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
            msg = f"{name} must be square matrices of shape (..., k, k), not {tuple(x.shape)}"
            raise ValueError(msg)
    k = locs[0].shape[-1]
    for name, x in zip(names, arrays, strict=True):
        if x.shape[-1] != k:
            size, shape = x.shape[-1], tuple(x.shape)
            msg = f"{name} has {size} dimensions where loc_p has {k} (shape {shape})"
            raise ValueError(msg)
    batches = [tuple(x.shape[:-1]) for x in locs] + [tuple(x.shape[:-2]) for x in trils]
    batch_names = [names[0], names[2], names[1], names[3]]
    shape = v.broadcast_shape([f"the batch of {n}" for n in batch_names], batches)
    return k, shape


_MATRICES = (1, 3)  # the positions of the factors among mvn's arguments


def _mvn(p: _Params, guard: _Guard, names: Sequence[str], factors: str = "") -> Array:
    """:func:`mvn` of checked parameters; ``factors`` names the covariance arguments when the
    factors came from them (:func:`mvn_cov`)."""
    xp = p.xp
    k, batch = _mvn_shapes(names, p.arrays)
    eye = xp.eye(k, dtype=p.arrays[1].dtype, device=_compat.device(p.arrays[1]))
    # the diagonal by a mask, as the standard's linalg.diagonal is an optional extension
    arrays, diagonals = list(p.arrays), []
    for i in _MATRICES:
        diagonal = xp.sum(arrays[i] * eye, axis=-1)
        ok = diagonal > 0
        rows_ok = xp.all(ok, axis=-1)
        if guard.require(
            names[i],
            diagonal,
            ok,
            "positive definite" if factors else "> 0 on its diagonal",
            readable=p.readable[i],
            bad=~rows_ok,
            entry="Cholesky diagonal entry" if factors else "diagonal entry",
        ):
            identity = xp.broadcast_to(eye, arrays[i].shape)
            arrays[i] = xp.where(rows_ok[..., None, None], arrays[i], identity)
            diagonal = xp.sum(arrays[i] * eye, axis=-1)
        diagonals.append(xp.broadcast_to(diagonal, (*batch, k)))
    diag_p, diag_q = diagonals
    mp, lp, mq, lq = arrays
    mp, mq = (xp.broadcast_to(m, (*batch, k)) for m in (mp, mq))
    lp, lq = (xp.broadcast_to(x, (*batch, k, k)) for x in (lp, lq))
    rhs = xp.concat((xp.tril(lp - lq), (mp - mq)[..., None]), axis=-1)
    solved = _solve_lower(lq, rhs, xp)
    n, z = solved[..., :k], solved[..., k]
    t = _log_ratio(diag_p, diag_q, xp)
    diagonal_terms = _expm1_minus(2 * t, xp)
    off = n * n * (1 - eye)
    return 0.5 * (
        xp.sum(diagonal_terms, axis=-1)
        + xp.sum(xp.sum(off, axis=-1), axis=-1)
        + xp.sum(z * z, axis=-1)
    )


def _solve_lower(lower: Array, rhs: Array, xp: Namespace) -> Array:
    """``lower^-1 @ rhs`` for lower-triangular ``lower`` (``(..., k, k)``, ``rhs`` of the
    same batch): the library's own triangular solve where it has a batched one."""
    if _compat.is_torch_namespace(xp):
        import torch

        return torch.linalg.solve_triangular(lower, rhs, upper=False)
    if _compat.is_jax_namespace(xp):
        from jax.scipy.linalg import solve_triangular

        return solve_triangular(lower, rhs, lower=True)
    # NumPy has no triangular solve (SciPy's is not a dependency), CuPy's takes no batch:
    # forward substitution, one row of the solution per step
    rows: list[Array] = []
    for i in range(lower.shape[-1]):
        row = rhs[..., i : i + 1, :]
        if rows:
            row = row - xp.matmul(lower[..., i : i + 1, :i], xp.concat(rows, axis=-2))
        rows.append(row / lower[..., i : i + 1, i : i + 1])
    return xp.concat(rows, axis=-2)


def mvn_cov(loc_p: Array, cov_p: Array, loc_q: Array, cov_q: Array, /) -> Array:
    """:func:`mvn` from covariance matrices, through their Cholesky factors.

    ``cov_p`` and ``cov_q`` (shape ``(..., k, k)``) must be symmetric positive definite; the
    factors come from ``xp.linalg.cholesky``, which reads one triangle. A matrix that is not
    positive definite raises ``ValueError`` where values can be read (NaN elsewhere).

    Examples
    --------
    >>> import numpy as np
    >>> from kldiv import distributions
    >>> cov = np.array([[1.0, 0.5], [0.5, 4.25]])
    >>> distributions.mvn_cov(np.zeros(2), np.eye(2), np.array([1.0, 0.0]), cov)
    array(0.88064718)
    """
    names = ("loc_p", "cov_p", "loc_q", "cov_q")
    p = _params(names, (loc_p, cov_p, loc_q, cov_q), broadcast=False)
    xp = p.xp
    _mvn_shapes(names, p.arrays)
    factors = list(p.arrays)
    for i in (1, 3):
        try:
            factors[i] = _cholesky(p.arrays[i], xp)
        except (ValueError, RuntimeError) as exc:  # NumPy's LinAlgError, torch's
            msg = f"{names[i]} must be positive definite ({exc})"
            raise ValueError(msg) from None
    guard = _Guard(xp)
    out = _mvn(p._replace(arrays=factors), guard, names, factors="cholesky")
    return _finish(out, p, guard)


def _cholesky(cov: Array, xp: Namespace) -> Array:
    """``xp.linalg.cholesky(cov)``; for Dask, whose ``cholesky`` takes one matrix, chunk by
    chunk with whole matrices in each chunk (:func:`_chunk_cholesky`)."""
    if not _compat.is_dask_namespace(xp):
        return xp.linalg.cholesky(cov)
    whole = cov.rechunk({cov.ndim - 2: -1, cov.ndim - 1: -1})
    return whole.map_blocks(_chunk_cholesky, dtype=cov.dtype)


def _chunk_cholesky(block: Array) -> Array:
    """The factors of a chunk's matrices, NaN for each one that is not positive definite: a
    lazy array cannot raise where its values are computed."""
    chunk_xp = _compat.array_namespace(block)
    try:
        return chunk_xp.linalg.cholesky(block)
    except (ValueError, RuntimeError):
        k = block.shape[-1]
        flat = chunk_xp.reshape(block, (-1, k, k))
        factors = []
        for matrix in flat:
            try:
                factors.append(chunk_xp.linalg.cholesky(matrix))
            except (ValueError, RuntimeError):
                factors.append(chunk_xp.full_like(matrix, chunk_xp.nan))
        return chunk_xp.reshape(chunk_xp.stack(factors), block.shape)


def bernoulli(p: Array, q: Array, /) -> Array:
    """``KL(Bernoulli(p) || Bernoulli(q))`` from the probabilities of 1.

    Parameters
    ----------
    p, q : array
        Probabilities in [0, 1], broadcast against each other.

    Returns
    -------
    array
        ``p*log(p/q) + (1 - p)*log((1 - p)/(1 - q))``, with ``0*log(0) = 0``, ``+inf`` where
        ``p`` gives mass that ``q`` does not.

    Notes
    -----
    The definition, summed over the two outcomes, is the sum of :func:`_entr_term` over them
    (whose ``-a + b`` parts add to 0): ``t(p, q) + t(1 - p, 1 - q)``, with ``p - q`` as the
    difference of both, so that the complements' rounding does not enter it.

    Examples
    --------
    >>> from kldiv import distributions
    >>> distributions.bernoulli([0.5, 0.5, 1.0], [0.25, 0.5, 0.5])
    array([0.14384104, 0.        , 0.69314718])
    """
    par = _params(("p", "q"), (p, q))
    xp, guard = par.xp, _Guard(par.xp)
    a, b = par.arrays
    a = guard.unit("p", a, par.readable[0])
    b = guard.unit("q", b, par.readable[1])
    out = _bernoulli_terms(a, b, xp)
    return _finish(out, par, guard)


def _bernoulli_terms(a: Array, b: Array, xp: Namespace) -> Array:
    ca, cb = 1 - a, 1 - b
    diff = a - b
    ones = _entr_term(a, b, _log0(a, xp), _log0(b, xp), diff, xp)
    zeros = _entr_term(ca, cb, _log0(ca, xp), _log0(cb, xp), -diff, xp)
    return ones + zeros


def bernoulli_logits(a: Array, b: Array, /) -> Array:
    """``KL(Bernoulli(sigmoid(a)) || Bernoulli(sigmoid(b)))`` from logits.

    Parameters
    ----------
    a, b : array
        Logits ``log(p/(1 - p))``, any real value (``+-inf`` for probabilities 1 and 0).

    Notes
    -----
    :func:`bernoulli`'s terms, with ``log(sigmoid(x)) = -softplus(-x)`` (finite where the
    sigmoid underflows: logits of ``+-1e4`` give the right divergence) and the difference
    of the probabilities without cancellation, from
    ``sigmoid(a) - sigmoid(b) = sigmoid(a)*sigmoid(-b)*(1 - exp(b - a))``, taken with the
    roles swapped when ``b > a`` so that the exponential never overflows.

    Examples
    --------
    >>> import numpy as np
    >>> from kldiv import distributions
    >>> distributions.bernoulli_logits(np.array([0.0, 1e4]), np.array([np.log(1 / 3), 0.0]))
    array([0.14384104, 0.69314718])
    """
    par = _params(("a", "b"), (a, b))
    xp, guard = par.xp, _Guard(par.xp)
    a, b = par.arrays
    pa, pb, ca, cb = _sigmoid(a, xp), _sigmoid(b, xp), _sigmoid(-a, xp), _sigmoid(-b, xp)
    delta = a - b
    gap = -xp.expm1(-xp.abs(xp.where(xp.isnan(delta), xp.zeros_like(delta), delta)))
    diff = xp.where(delta >= 0, pa * cb, -(pb * ca)) * gap
    zero = xp.zeros_like(a)
    log_pa, log_pb = -xp.logaddexp(zero, -a), -xp.logaddexp(zero, -b)
    log_ca, log_cb = -xp.logaddexp(zero, a), -xp.logaddexp(zero, b)
    out = _entr_term(pa, pb, log_pa, log_pb, diff, xp) + _entr_term(
        ca, cb, log_ca, log_cb, -diff, xp
    )
    out = xp.where(xp.isnan(delta), delta, out)
    return _finish(out, par, guard)


def _sigmoid(x: Array, xp: Namespace) -> Array:
    """``1/(1 + exp(-x))`` to a few roundings, from ``exp(-|x|)``, which cannot overflow."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def geometric(p: Array, q: Array, /) -> Array:
    """``KL(Geometric(p) || Geometric(q))``, the number of failures before the first success
    with success probabilities ``p`` and ``q`` in (0, 1] (PyTorch's ``Geometric``).

    Notes
    -----
    With mean ``(1 - p)/p`` failures, ``KL = log(p/q) + (1 - p)/p * log((1 - p)/(1 - q))``,
    which is ``bernoulli(p, q)/p``: computed so, without cancellation.

    Examples
    --------
    >>> from kldiv import distributions
    >>> distributions.geometric(0.5, 0.25)
    array(0.28768207)
    """
    par = _params(("p", "q"), (p, q))
    xp, guard = par.xp, _Guard(par.xp)
    a, b = par.arrays
    a = guard.unit("p", a, par.readable[0], zero=False)
    b = guard.unit("q", b, par.readable[1], zero=False)
    return _finish(_bernoulli_terms(a, b, xp) / a, par, guard)


def categorical(
    p: Array,
    q: Array,
    /,
    *,
    axis: Axis = -1,
    keepdims: bool = False,
    base: float | None = None,
    validate: bool = True,
) -> Array:
    """``KL(Categorical(p) || Categorical(q))`` from probabilities: :func:`kldiv.kl_div`.

    Its arguments, options and checks; Python numbers and sequences become floating arrays,
    as for every family here (``categorical([1, 0], [0.5, 0.5])``).

    Examples
    --------
    >>> from kldiv import distributions
    >>> distributions.categorical([0.5, 0.5], [0.25, 0.75])
    array(0.14384104)
    """
    _, (p, q) = _floating(("p", "q"), (p, q))
    return _funcs.kl_div(p, q, axis=axis, keepdims=keepdims, base=base, validate=validate)


def categorical_logits(
    a: Array,
    b: Array,
    /,
    *,
    axis: Axis = -1,
    keepdims: bool = False,
    base: float | None = None,
    validate: bool = True,
) -> Array:
    """``KL(Categorical(softmax(a)) || Categorical(softmax(b)))``: :func:`kldiv.kl_div_logits`.

    Its arguments, options and checks; Python numbers and sequences become floating arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from kldiv import distributions
    >>> distributions.categorical_logits(np.log([0.5, 0.5]), np.log([0.25, 0.75]))
    array(0.14384104)
    """
    _, (a, b) = _floating(("a", "b"), (a, b))
    return _funcs.kl_div_logits(a, b, axis=axis, keepdims=keepdims, base=base, validate=validate)


def poisson(rate_p: Array, rate_q: Array, /) -> Array:
    """``KL(Poisson(rate_p) || Poisson(rate_q))`` for rates > 0.

    Notes
    -----
    From the definition, ``E_p[log p(x) - log q(x)]`` with ``log p(x) = x*log(rate_p) -
    rate_p - log(x!)`` and ``E_p[x] = rate_p``::

        KL = rate_p*log(rate_p/rate_q) - rate_p + rate_q

    which is :func:`_entr_term`.

    Examples
    --------
    >>> from kldiv import distributions
    >>> distributions.poisson(2.0, 1.0)
    array(0.38629436)
    """
    names = ("rate_p", "rate_q")
    par = _params(names, (rate_p, rate_q))
    guard, (a, b) = _checked(par, names, names)
    xp = par.xp
    return _finish(_entr_term(a, b, xp.log(a), xp.log(b), a - b, xp), par, guard)


def exponential(rate_p: Array, rate_q: Array, /) -> Array:
    """``KL(Exponential(rate_p) || Exponential(rate_q))`` for rates > 0.

    Notes
    -----
    From the definition, with ``log p(x) = log(rate_p) - rate_p*x`` and
    ``E_p[x] = 1/rate_p``, and ``r = rate_q/rate_p``::

        KL = log(rate_p/rate_q) + rate_q/rate_p - 1 = r - 1 - log r

    which is :func:`_expm1_minus` of ``log r``.

    Examples
    --------
    >>> from kldiv import distributions
    >>> distributions.exponential(1.0, 2.0)
    array(0.30685282)
    """
    names = ("rate_p", "rate_q")
    par = _params(names, (rate_p, rate_q))
    guard, (a, b) = _checked(par, names, names)
    xp = par.xp
    return _finish(_expm1_minus(_log_ratio(b, a, xp), xp), par, guard)


def laplace(loc_p: Array, scale_p: Array, loc_q: Array, scale_q: Array, /) -> Array:
    """``KL(Laplace(loc_p, scale_p) || Laplace(loc_q, scale_q))`` for scales > 0.

    Notes
    -----
    With ``r = scale_p/scale_q``, ``x = |loc_p - loc_q|/scale_p`` (Gil, Alajaji and Linder,
    *Renyi divergence measures for commonly used univariate continuous distributions*,
    2013)::

        KL = -log r + x*r + r*exp(-x) - 1 = (r - 1 - log r) + r*(exp(-x) - 1 + x)

    two non-negative terms, each :func:`_expm1_minus` (of ``log r`` and of ``-x``).

    Examples
    --------
    >>> from kldiv import distributions
    >>> distributions.laplace(0.0, 1.0, 1.0, 2.0)
    array(0.3770869)
    """
    names = ("loc_p", "scale_p", "loc_q", "scale_q")
    par = _params(names, (loc_p, scale_p, loc_q, scale_q))
    guard, (mp, sp, mq, sq) = _checked(par, names, ("scale_p", "scale_q"))
    xp = par.xp
    t = _log_ratio(sp, sq, xp)
    x = xp.abs(mp - mq) / sp
    out = _expm1_minus(t, xp) + xp.exp(t) * _expm1_minus(-x, xp)
    return _finish(out, par, guard)


def uniform(low_p: Array, high_p: Array, low_q: Array, high_q: Array, /) -> Array:
    """``KL(Uniform(low_p, high_p) || Uniform(low_q, high_q))``.

    Returns
    -------
    array
        ``log((high_q - low_q)/(high_p - low_p))`` where ``[low_p, high_p]`` lies inside
        ``[low_q, high_q]``, ``+inf`` where it does not (``p`` puts mass where ``q`` has
        none).

    Raises
    ------
    ValueError
        ``high <= low`` for ``p`` or ``q`` (where values can be read).

    Notes
    -----
    From the definition: on ``p``'s support the log-density ratio is the constant
    ``log(width_q/width_p)``, taken by :func:`_log_ratio`.

    Examples
    --------
    >>> from kldiv import distributions
    >>> distributions.uniform([0.0, 0.0], [1.0, 1.0], [0.0, 0.5], [2.0, 2.0])
    array([0.69314718,        inf])
    """
    names = ("low_p", "high_p", "low_q", "high_q")
    par = _params(names, (low_p, high_p, low_q, high_q))
    xp, guard = par.xp, _Guard(par.xp)
    lp, hp, lq, hq = par.arrays
    width_p, width_q = hp - lp, hq - lq
    one = xp.ones_like(width_p + width_q)
    for name, width, readable in (
        ("high_p", width_p, par.readable[0] and par.readable[1]),
        ("high_q", width_q, par.readable[2] and par.readable[3]),
    ):
        label = f"{name} - {name.replace('high', 'low')}"
        if guard.require(label, width, width > 0, "> 0", readable=readable):
            width_p, width_q = (xp.where(width > 0, w, one) for w in (width_p, width_q))
    inside = (lq <= lp) & (hp <= hq)
    out = xp.where(inside, _log_ratio(width_q, width_p, xp), xp.inf * one)
    return _finish(out, par, guard)


# ---------------------------------------------------------------------------------------------
# The families of special functions.


class _Special(NamedTuple):
    gammaln: Callable[[Array], Array]
    digamma: Callable[[Array], Array]
    polygamma: Callable[[int, Array], Array]


# (is this the library?, where its gammaln, digamma and polygamma are). No array-API standard
# has special functions, so each library's own; Dask's are SciPy's, chunk by chunk (NumPy
# chunks).
_SPECIAL_MODULES: tuple[tuple[Callable[[Any], bool], str], ...] = (
    (_compat.is_torch_namespace, "torch.special"),
    (_compat.is_jax_namespace, "jax.scipy.special"),
    (_compat.is_cupy_namespace, "cupyx.scipy.special"),
    (_compat.is_numpy_namespace, "scipy.special"),
    (_compat.is_dask_namespace, "scipy.special"),
)


def _special(xp: Namespace, func: str) -> _Special:
    """``gammaln``, ``digamma`` and ``polygamma`` for arrays of ``xp``, from
    :data:`_SPECIAL_MODULES`, imported on first use (SciPy is no dependency of kldiv);
    ``TypeError`` for a library without them."""
    for matches, name in _SPECIAL_MODULES:
        if matches(xp):
            try:
                module = importlib.import_module(name)
            except ImportError:
                msg = f"{func} needs {name} for arrays of {xp.__name__}, and it is not installed"
                raise TypeError(msg) from None
            if _compat.is_dask_namespace(xp):
                return _Special(
                    _chunkwise(module.gammaln),
                    _chunkwise(module.digamma),
                    _chunkwise_polygamma(module.polygamma),
                )
            return _Special(module.gammaln, module.digamma, module.polygamma)
    msg = (
        f"{func} needs the special functions gammaln, digamma and polygamma, which "
        f"{xp.__name__} does not have; kldiv finds them for NumPy (with SciPy), CuPy, "
        "PyTorch, JAX and Dask arrays"
    )
    raise TypeError(msg)


def _chunkwise(f: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """``f`` applied to each chunk of a Dask array."""
    return lambda x: x.map_blocks(f, dtype=x.dtype)


def _chunkwise_polygamma(f: Callable[[int, Array], Array]) -> Callable[[int, Array], Array]:
    """``f(n, chunk)`` applied to each chunk of a Dask array."""
    return lambda n, x: x.map_blocks(lambda chunk: f(n, chunk), dtype=x.dtype)


# |y - x| < this times x takes the Taylor series of lgamma about x, whose terms shrink by
# |y - x|/x (the pole of lgamma at 0 sets the radius): terms up to the 11th power leave
# (1e-2)**10 of the sum; from there the direct form keeps about 1e-12 of its value.
_LGAMMA_SERIES = 0.01
_LGAMMA_TERMS = tuple(range(2, 12))


def _lgamma_bregman(
    y: Array, x: Array, sp: _Special, xp: Namespace, d: Array | None = None
) -> Array:
    """``B(y, x) = lgamma(y) - lgamma(x) - (y - x)*digamma(x) >= 0``, the Bregman divergence
    of the convex ``lgamma``, from which the gamma, beta and Dirichlet divergences are made.

    The direct form cancels for ``y`` near ``x``: it keeps ``eps*|lgamma(x)|`` of a value of
    ``polygamma(1, x)*(y - x)**2/2``. There the Taylor series of ``lgamma`` about ``x``,
    ``B = sum_{k >= 2} polygamma(k - 1, x)*(y - x)**k/k!``, has no cancellation (its terms
    shrink by ``|y - x|/x``) and is summed by Horner's rule. ``d`` is ``y - x`` where the
    caller has it more exactly than the subtraction (a sum of differences, for ``y`` and
    ``x`` that are themselves rounded sums).
    """
    if d is None:
        d = y - x
    near = xp.abs(d) < _LGAMMA_SERIES * x
    dn = xp.where(near, d, xp.zeros_like(d))
    series = xp.zeros_like(d)
    for k in reversed(_LGAMMA_TERMS):
        series = (series + sp.polygamma(k - 1, x) / math.factorial(k)) * dn
    series = series * dn
    direct = sp.gammaln(y) - sp.gammaln(x) - d * sp.digamma(x)
    return xp.where(near, series, direct)


def gamma(concentration_p: Array, rate_p: Array, concentration_q: Array, rate_q: Array, /) -> Array:
    """``KL(Gamma(concentration_p, rate_p) || Gamma(concentration_q, rate_q))``.

    Shape-rate parameters (density ``x**(a - 1)*exp(-rate*x)``, as PyTorch's ``Gamma``),
    all > 0.

    Raises
    ------
    TypeError
        Arrays of a library without special functions (array_api_strict; NumPy without
        SciPy).

    Notes
    -----
    With ``a`` the concentrations, ``u = log(rate_q/rate_p)`` (Penny, *KL-divergences of
    Normal, Gamma, Dirichlet and Wishart densities*, 2001, with rates)::

        KL = (a_p - a_q)*digamma(a_p) - lgamma(a_p) + lgamma(a_q)
             + a_q*log(rate_p/rate_q) + a_p*(rate_q/rate_p - 1)
           = B(a_q, a_p) + a_q*(exp(u) - 1 - u) + (a_p - a_q)*expm1(u)

    with ``B`` the Bregman divergence of ``lgamma`` (:func:`_lgamma_bregman`, a Taylor
    series for near-identical concentrations) and ``u`` from :func:`_log_ratio`.

    Examples
    --------
    >>> from kldiv import distributions
    >>> distributions.gamma(2.0, 1.0, 1.0, 1.0)
    array(0.42278434)
    """
    names = ("concentration_p", "rate_p", "concentration_q", "rate_q")
    par = _params(names, (concentration_p, rate_p, concentration_q, rate_q))
    xp = par.xp
    sp = _special(xp, "gamma")
    guard, (ap, bp, aq, bq) = _checked(par, names, names)
    u = _log_ratio(bq, bp, xp)
    out = _lgamma_bregman(aq, ap, sp, xp) + aq * _expm1_minus(u, xp) + (ap - aq) * xp.expm1(u)
    return _finish(out, par, guard)


def beta(alpha_p: Array, beta_p: Array, alpha_q: Array, beta_q: Array, /) -> Array:
    """``KL(Beta(alpha_p, beta_p) || Beta(alpha_q, beta_q))``, all parameters > 0.

    Notes
    -----
    The two-component :func:`dirichlet`::

        KL = B(alpha_q, alpha_p) + B(beta_q, beta_p) - B(alpha_q + beta_q, alpha_p + beta_p)

    with ``B`` the Bregman divergence of ``lgamma`` (:func:`_lgamma_bregman`), which expands
    to the textbook ``log(Beta(alpha_q, beta_q)/Beta(alpha_p, beta_p)) + ...`` form.

    Examples
    --------
    >>> from kldiv import distributions
    >>> distributions.beta(2.0, 2.0, 1.0, 1.0)
    array(0.1250928)
    """
    names = ("alpha_p", "beta_p", "alpha_q", "beta_q")
    par = _params(names, (alpha_p, beta_p, alpha_q, beta_q))
    xp = par.xp
    sp = _special(xp, "beta")
    guard, (ap, bp, aq, bq) = _checked(par, names, names)
    out = (
        _lgamma_bregman(aq, ap, sp, xp)
        + _lgamma_bregman(bq, bp, sp, xp)
        - _lgamma_bregman(aq + bq, ap + bp, sp, xp, (aq - ap) + (bq - bp))
    )
    return _finish(out, par, guard)


def dirichlet(
    concentration_p: Array, concentration_q: Array, /, *, axis: int = -1, keepdims: bool = False
) -> Array:
    """``KL(Dirichlet(concentration_p) || Dirichlet(concentration_q))`` along ``axis``.

    Parameters
    ----------
    concentration_p, concentration_q : array
        Concentrations (> 0), the components of one distribution along ``axis`` (not
        broadcast); the other axes broadcast.
    axis : int, optional
        The axis of the components (default -1).
    keepdims : bool, optional
        Keep ``axis`` with size 1.

    Notes
    -----
    With ``a0 = sum(a)`` (Penny, 2001)::

        KL = lgamma(p0) - sum(lgamma(p)) - lgamma(q0) + sum(lgamma(q))
             + sum((p - q)*(digamma(p) - digamma(p0)))
           = sum(B(q, p)) - B(q0, p0)

    with ``B`` the Bregman divergence of ``lgamma`` (:func:`_lgamma_bregman`).

    Examples
    --------
    >>> from kldiv import distributions
    >>> distributions.dirichlet([2.0, 2.0], [1.0, 1.0])
    array(0.1250928)
    """
    names = ("concentration_p", "concentration_q")
    par = _params(names, (concentration_p, concentration_q))
    xp, guard = par.xp, _Guard(par.xp)
    sp = _special(xp, "dirichlet")
    cp, cq = par.arrays
    shape = v.broadcast_shape(names, [tuple(cp.shape), tuple(cq.shape)])
    axes = v.normalize_axis(axis, len(shape), "dirichlet")
    v.check_distribution_axes(names, par.arrays, shape, axes)
    v.check_not_empty("dirichlet", shape, axes)
    cp = v.expand_to(guard.positive(names[0], cp, par.readable[0]), len(shape), xp)
    cq = v.expand_to(guard.positive(names[1], cq, par.readable[1]), len(shape), xp)
    p0 = xp.sum(cp, axis=axes, keepdims=True)
    q0 = xp.sum(cq, axis=axes, keepdims=True)
    terms = guard.nan_where_bad(_lgamma_bregman(cq, cp, sp, xp))
    d0 = xp.sum(cq - cp, axis=axes, keepdims=True)
    out = xp.sum(terms, axis=axes, keepdims=True) - _lgamma_bregman(q0, p0, sp, xp, d0)
    if not keepdims:
        out = xp.squeeze(out, axis=axes)
    return _finish(out, par, guard)
