"""The divergences written once against the array API standard.

Every backend without a fast path of its own runs this code, and the fast paths are tested
against it. Each function takes arrays already checked by the public layer (floating,
broadcast-compatible, ``axes`` normalised to non-negative ints of the broadcast shape) and
the namespace ``xp`` as a required keyword. The arithmetic runs in
:func:`kldiv._dtypes.compute_dtype`; the result is cast back to the inputs' dtype.

Every function takes ``validate``, as every backend's does. This module leaves the value
checks to the public layer (it has no ``CHECKS_VALUES``); a backend that fuses them into its
own pass over the data sets ``CHECKS_VALUES = True`` and checks when ``validate`` is true.

The elementwise term behind the KL divergence is written so that it is never negative::

    t(p, q) = p*log(p/q) - p + q = q*phi(p/q),   phi(r) = r*log(r) - r + 1 >= 0

and ``KL(p || q) = sum(t) + sum(p - q)``. Summing non-negative terms does not cancel, which
is where ``sum(p*log(p/q))`` loses its digits for near-identical ``p`` and ``q``. Near
``p == q`` the term comes from ``s = (p - q)/(p + q)``, exact to a rounding, through
``log(p/q) = 2*atanh(s)``::

    t = (p + q) * (s**2 + (1 + s)*(atanh(s) - s))

Elsewhere ``log(p) - log(q)`` replaces ``log(p/q)``, since ``p/q`` overflows for tiny ``q``.
"""

from __future__ import annotations

from typing import Any

from kldiv._compat import device
from kldiv._dtypes import compute_dtype

Array = Any
Namespace = Any

# |s| below this takes the atanh form: |s| < 1/2 means p/q in (1/3, 3), where log(p) - log(q)
# would cancel, and above it atanh(s) would lose the tiny q in p + q.
_NEAR = 0.5


def _upcast(xp: Namespace, *arrays: Array) -> tuple[Any, Any, list[Array]]:
    """The result dtype, the compute dtype, and the arrays cast to the compute dtype."""
    out_dtype = xp.result_type(*arrays)
    work = compute_dtype(xp, out_dtype, device(arrays[0]))
    return out_dtype, work, [xp.astype(a, work) for a in arrays]


def _positive_or_one(x: Array, xp: Namespace) -> Array:
    """``x`` with its non-positive entries replaced by 1, to take logs without warnings."""
    return xp.where(x > 0, x, xp.ones_like(x))


def kl_terms(p: Array, q: Array, xp: Namespace) -> Array:
    """``t(p, q) = p*log(p/q) - p + q``, elementwise; see the module docstring.

    ``t(0, q) = q``; ``t(p, 0) = inf`` for ``p > 0``; ``t(0, 0) = 0``; NaN where either is
    NaN or negative, so that unchecked bad input never turns into a number.
    """
    total = p + q
    s = (p - q) / _positive_or_one(total, xp)
    near = xp.abs(s) < _NEAR
    s_near = xp.where(near, s, xp.zeros_like(s))
    t_near = total * (s_near * s_near + (1 + s_near) * (xp.atanh(s_near) - s_near))
    log_ratio = xp.log(_positive_or_one(p, xp)) - xp.log(_positive_or_one(q, xp))
    t_far = p * log_ratio - (p - q)
    t = xp.where(near, t_near, t_far)
    t = xp.where(q > 0, t, xp.full_like(t, xp.inf))
    t = xp.where(p > 0, t, q)
    bad = (p < 0) | (q < 0) | xp.isnan(p) | xp.isnan(q)
    return xp.where(bad, xp.full_like(t, xp.nan), t)


def rel_entr(p: Array, q: Array, *, validate: bool, xp: Namespace) -> Array:
    """Elementwise ``p*log(p/q)``: 0 where ``p == 0``, ``inf`` where ``p > 0 == q``."""
    del validate  # the public layer has checked the values already
    out_dtype, _, (p, q) = _upcast(xp, p, q)
    total = p + q
    s = (p - q) / _positive_or_one(total, xp)
    near = xp.abs(s) < _NEAR
    s_near = xp.where(near, s, xp.zeros_like(s))
    log_ratio = xp.where(
        near,
        2 * xp.atanh(s_near),
        xp.log(_positive_or_one(p, xp)) - xp.log(_positive_or_one(q, xp)),
    )
    r = p * log_ratio
    r = xp.where(q > 0, r, xp.full_like(r, xp.inf))
    r = xp.where(p > 0, r, xp.zeros_like(r))
    bad = (p < 0) | (q < 0) | xp.isnan(p) | xp.isnan(q)
    r = xp.where(bad, xp.full_like(r, xp.nan), r)
    return xp.astype(r, out_dtype)


def kl_div(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """``sum(t(p, q)) + sum(p - q)`` along ``axes``; with ``validate``, no result below 0.

    The mass difference ``sum(p - q)`` is what makes the non-negative terms add up to
    ``sum(p*log(p/q))`` exactly. For distributions it is a rounding, and a KL divergence
    below zero can only be that rounding: with ``validate`` (the rows were checked to be
    distributions) such a result becomes 0.
    """
    out_dtype, _, (p, q) = _upcast(xp, p, q)
    kl = xp.sum(kl_terms(p, q, xp), axis=axes, keepdims=keepdims)
    kl = kl + xp.sum(p - q, axis=axes, keepdims=keepdims)
    if validate:
        kl = xp.where(kl < 0, xp.zeros_like(kl), kl)
    return xp.astype(kl, out_dtype)


def entropy(
    p: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """``-sum(p*log(p))`` along ``axes``, with ``0*log(0) = 0``."""
    del validate  # the public layer has checked the values already
    out_dtype, _, (p,) = _upcast(xp, p)
    terms = -p * xp.log(_positive_or_one(p, xp))
    terms = xp.where(p < 0, xp.full_like(terms, xp.nan), terms)
    return xp.astype(xp.sum(terms, axis=axes, keepdims=keepdims), out_dtype)


def cross_entropy(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """``-sum(p*log(q))`` along ``axes``: 0 where ``p == 0``, ``inf`` where ``p > 0 == q``."""
    del validate  # the public layer has checked the values already
    out_dtype, _, (p, q) = _upcast(xp, p, q)
    terms = -p * xp.log(_positive_or_one(q, xp))
    terms = xp.where(q > 0, terms, xp.full_like(terms, xp.inf))
    terms = xp.where(p > 0, terms, xp.zeros_like(terms))
    bad = (p < 0) | (q < 0) | xp.isnan(p) | xp.isnan(q)
    terms = xp.where(bad, xp.full_like(terms, xp.nan), terms)
    return xp.astype(xp.sum(terms, axis=axes, keepdims=keepdims), out_dtype)


def js_div(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """``(KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q)/2``.

    The mass differences ``sum(p - m)`` and ``sum(q - m)`` cancel exactly, so the result is a
    sum of non-negative terms alone.
    """
    del validate  # the public layer has checked the values already
    out_dtype, _, (p, q) = _upcast(xp, p, q)
    m = (p + q) / 2
    terms = kl_terms(p, m, xp) + kl_terms(q, m, xp)
    return xp.astype(xp.sum(terms, axis=axes, keepdims=keepdims) / 2, out_dtype)


def log_softmax(a: Array, axes: tuple[int, ...], xp: Namespace) -> Array:
    """``a - logsumexp(a)`` along ``axes``; rows hold at least one finite entry."""
    peak = xp.max(a, axis=axes, keepdims=True)
    shifted = a - peak
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axes, keepdims=True))


def logit_terms(la: Array, lb: Array, xp: Namespace) -> Array:
    """``t = p*log(p/q) - p + q`` from log-probabilities ``la = log p``, ``lb = log q``.

    With ``d = la - lb``, ``p - q = q*expm1(d)`` keeps its digits for small ``d``; each term
    is clipped at 0, which it can only miss by a rounding.
    """
    p = xp.exp(la)
    q = xp.exp(lb)
    zero = xp.zeros_like(la)
    finite = (la > -xp.inf) & (lb > -xp.inf)
    d = xp.where(finite, la, zero) - xp.where(finite, lb, zero)
    small = xp.abs(d) < 1
    mass = xp.where(small, q * xp.expm1(xp.where(small, d, zero)), p - q)
    t = p * d - mass
    # Conditions that are False for NaN, so that a NaN logit gives NaN and never a number.
    t = xp.where(t < 0, xp.zeros_like(t), t)
    t = xp.where(lb == -xp.inf, xp.full_like(t, xp.inf), t)
    return xp.where(la == -xp.inf, q, t)


def kl_div_logits(
    a: Array, b: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """KL(softmax(a) || softmax(b)) along ``axes``, all in log space.

    Both softmaxes sum to 1 exactly in real arithmetic, so no mass difference is added.
    """
    del validate  # the public layer has checked the values already
    out_dtype, _, (a, b) = _upcast(xp, a, b)
    a, b = xp.broadcast_arrays(a, b)
    terms = logit_terms(log_softmax(a, axes, xp), log_softmax(b, axes, xp), xp)
    return xp.astype(xp.sum(terms, axis=axes, keepdims=keepdims), out_dtype)


def softmax_kl_loss(
    pred: Array, target: Array, *, norm_target: bool, xp: Namespace
) -> tuple[Array, Array]:
    """PuzzleLib's KL loss on ``(N, K)`` rows: the error summed over the batch, and the grad.

    The error is ``sum(y*(log y - log softmax(pred)))`` over every row, with ``y`` the target
    (its softmax with ``norm_target``); the grad is ``(y - softmax(pred))/N`` in ``pred``'s
    dtype. Both come from log-softmaxes, so a logit gap that underflows the softmax leaves the
    error finite. Returns a 0-d array in the compute dtype, and the grad.
    """
    out_dtype = pred.dtype
    _, _, (pred, target) = _upcast(xp, pred, target)
    axes = (1,)
    log_s = log_softmax(pred, axes, xp)
    if norm_target:
        log_y = log_softmax(target, axes, xp)
        y = xp.exp(log_y)
        mass = 0.0
    else:
        y = target
        log_y = xp.where(y > 0, xp.log(_positive_or_one(y, xp)), xp.full_like(y, -xp.inf))
        # The terms assume sum(y) = 1, as sum(softmax) is; this restores the given target's sum.
        mass = xp.sum(y) - y.shape[0]
    error = xp.sum(logit_terms(log_y, log_s, xp)) + mass
    grad = (y - xp.exp(log_s)) / pred.shape[0]
    return error, xp.astype(grad, out_dtype)
