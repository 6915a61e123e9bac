"""The divergences written once against the array API standard.

Every backend without a fast path of its own runs this code, and the fast paths are tested
against it. Each function takes arrays already checked by the public layer (floating,
broadcast-compatible, ``axes`` normalised to non-negative ints of the broadcast shape) and
the namespace ``xp`` as a required keyword. The arithmetic runs in
:func:`kldiv._dtypes.compute_dtype`; the result is cast back to the inputs' dtype.

Every function takes ``validate``, as every fast path's does. This module leaves the value
checks to the public layer (it fuses none, see :func:`kldiv._dispatch.fuses`); ``validate``
only says whether :mod:`kldiv._table`'s clipping rule applies.

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

import math
from typing import Any, NamedTuple

from kldiv._compat import device
from kldiv._dtypes import compute_dtype
from kldiv._table import DIVERGENCES
from kldiv._typing import Array, Namespace

# |s| below this takes the atanh form: |s| < 1/2 means p/q in (1/3, 3), where log(p) - log(q)
# would cancel, and above it atanh(s) would lose the tiny q in p + q.
_NEAR = 0.5


def _upcast(xp: Namespace, *arrays: Array) -> tuple[Any, Any, list[Array]]:
    """The result dtype, the compute dtype, and the arrays cast to the compute dtype."""
    out_dtype = xp.result_type(*arrays)
    work = compute_dtype(xp, out_dtype, device(arrays[0]))
    return out_dtype, work, [xp.astype(a, work) for a in arrays]


def _positive_or_one(x: Array, xp: Namespace) -> Array:
    """``x`` with its entries that are not positive and finite replaced by 1, to compute
    with, without warnings, what the caller then masks.

    Every masked operand is made harmless this way before the operation, not after: under
    autodiff, ``where`` sends a zero gradient into the branch it drops, and a zero times the
    infinite derivative of ``log(0)`` would be NaN.
    """
    return xp.where((x > 0) & (x < xp.inf), x, xp.ones_like(x))


def _invalid(xp: Namespace, *arrays: Array) -> Array:
    """Where an entry of ``arrays`` is negative, NaN or infinite: what validation refuses, and
    what gives NaN, never a number, where it is not checked."""
    bad = ~(xp.isfinite(arrays[0]) & (arrays[0] >= 0))
    for x in arrays[1:]:
        bad = bad | ~(xp.isfinite(x) & (x >= 0))
    return bad


class _Ratio(NamedTuple):
    """``log(p/q)`` elementwise and the pieces the terms near ``p == q`` are made of."""

    p: Array  # p and q with their entries that are not positive and finite replaced by 1
    q: Array
    near: Array  # |s| < 1/2 with s = (p - q)/(p + q): p/q in (1/3, 3)
    s: Array  # s where near, 0 elsewhere
    atanh_s: Array
    log: Array  # log(p/q), exact to a rounding relative to its value

    def near_terms(self) -> Array:
        """``t = p*log(p/q) - (p - q) >= 0`` where ``near``, as
        ``(p + q)*(s**2 + (1 + s)*(atanh(s) - s))``, which cancels nothing."""
        s = self.s
        return (self.p + self.q) * (s * s + (1 + s) * (self.atanh_s - s))


def _ratio(p: Array, q: Array, xp: Namespace) -> _Ratio:
    """``log(p/q)`` for ``p, q > 0``, exact to a rounding relative to its value.

    Near ``p == q`` it is ``2*atanh(s)``, ``s`` exact to one rounding. Elsewhere
    ``|log(p/q)| > log(3)``, and ``log`` of the rounded ratio is exact relative to that; where
    the ratio would come near overflow or underflow, ``log(p) - log(q)`` is, since then
    ``|log(p/q)|`` is over 670 (float64; 84 for float32 arithmetic).
    Entries with ``p`` or ``q`` not positive get a finite placeholder, for the caller to mask.
    """
    p1, q1 = _positive_or_one(p, xp), _positive_or_one(q, xp)
    s = (p1 - q1) / (p1 + q1)
    near = xp.abs(s) < _NEAR
    s_near = xp.where(near, s, xp.zeros_like(s))
    atanh_s = xp.atanh(s_near)
    difference = xp.log(p1) - xp.log(q1)
    # the ratio where it is a normal float, well inside the range: |log(p/q)| < 700 (float64);
    # float32's range when the compute dtype is float32
    limit = 0.95 * math.log(float(xp.finfo(p1.dtype).max))
    plain = xp.abs(difference) < limit
    one = xp.ones_like(p1)
    ratio = xp.where(plain, p1, one) / xp.where(plain, q1, one)
    log_far = xp.where(plain, xp.log(ratio), difference)
    return _Ratio(p1, q1, near, s_near, atanh_s, xp.where(near, 2 * atanh_s, log_far))


def kl_terms(p: Array, q: Array, xp: Namespace) -> Array:
    """``t(p, q) = p*log(p/q) - p + q >= 0``, elementwise; see the module docstring.

    ``t(0, q) = q``; ``t(p, 0) = inf`` for ``p > 0``; ``t(0, 0) = 0``; NaN where either is
    negative, NaN or infinite, so that unchecked bad input never turns into a number.
    """
    r = _ratio(p, q, xp)
    t = xp.where(r.near, r.near_terms(), r.p * r.log - (r.p - r.q))
    t = xp.where(q > 0, t, xp.full_like(t, xp.inf))
    t = xp.where(p > 0, t, q)
    return xp.where(_invalid(xp, p, q), xp.full_like(t, xp.nan), t)


def _kl_parts(p: Array, q: Array, xp: Namespace) -> tuple[Array, Array]:
    """``(t, m)`` elementwise with ``KL(p || q) = sum(t) + sum(m)`` and ``t >= 0``.

    Near ``p == q`` (``|s| < 1/2``) an entry goes in as ``t = p*log(p/q) - (p - q)`` and
    ``m = p - q``: ``t`` is what near-identical distributions would lose to cancellation, and
    ``p - q`` is exact there. Far from it, ``m = p*log(p/q)`` whole, so that a large ``q``
    (an unnormalised measure) never makes a large ``t`` that the mass difference would cancel:
    each entry is exact to a rounding, and the result to a rounding of ``sum(|m|) + sum(t)``.
    ``p == 0`` gives ``(0, 0)``; ``p > 0 == q`` gives ``m = inf``; bad input NaN.
    """
    r = _ratio(p, q, xp)
    zero = xp.zeros_like(r.p)
    t = xp.where(r.near, r.near_terms(), zero)
    m = xp.where(r.near, r.p - r.q, r.p * r.log)
    m = xp.where(q > 0, m, xp.full_like(m, xp.inf))
    live = p > 0
    t, m = xp.where(live, t, zero), xp.where(live, m, zero)
    return t, xp.where(_invalid(xp, p, q), xp.full_like(m, xp.nan), m)


def rel_entr(p: Array, q: Array, *, validate: bool, xp: Namespace) -> Array:
    """Elementwise ``p*log(p/q)``: 0 where ``p == 0``, ``inf`` where ``p > 0 == q``; NaN for
    a negative, NaN or infinite entry."""
    del validate  # the public layer has checked the values already
    out_dtype, _, (p, q) = _upcast(xp, p, q)
    ratio = _ratio(p, q, xp)
    r = ratio.p * ratio.log
    r = xp.where(q > 0, r, xp.full_like(r, xp.inf))
    r = xp.where(p > 0, r, xp.zeros_like(r))
    r = xp.where(_invalid(xp, p, q), xp.full_like(r, xp.nan), r)
    return xp.astype(r, out_dtype)


def kl_div(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """``sum(t) + sum(m)`` of :func:`_kl_parts` along ``axes``; with ``validate``, no result
    below 0.

    For distributions the two sums differ by far more than a rounding only where KL is large,
    and a KL divergence below zero can only be the rounding of the inputs' sums: with
    ``validate`` (the rows were checked to be distributions) such a result becomes 0.
    """
    out_dtype, _, (p, q) = _upcast(xp, p, q)
    t, m = _kl_parts(p, q, xp)
    kl = xp.sum(t, axis=axes, keepdims=keepdims) + xp.sum(m, axis=axes, keepdims=keepdims)
    return xp.astype(_clipped("kl_div", kl, validate, xp), out_dtype)


def _clipped(name: str, x: Array, validate: bool, xp: Namespace) -> Array:
    """``x`` with results below 0 made 0 where :mod:`kldiv._table` says they are rounding."""
    if DIVERGENCES[name].clips(validate):
        return xp.where(x < 0, xp.zeros_like(x), x)
    return x


def entropy(
    p: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """``-sum(p*log(p))`` along ``axes``, with ``0*log(0) = 0``; never ``-0.``."""
    del validate  # the public layer has checked the values already
    out_dtype, _, (p,) = _upcast(xp, p)
    p1 = _positive_or_one(p, xp)
    terms = p1 * xp.log(p1)
    terms = xp.where(_invalid(xp, p), xp.full_like(terms, xp.nan), terms)
    # 0 - x rather than -x: a point mass sums to 0., whose negation would print as -0.
    return xp.astype(0 - xp.sum(terms, axis=axes, keepdims=keepdims), out_dtype)


def cross_entropy(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """``-sum(p*log(q))`` along ``axes``: 0 where ``p == 0``, ``inf`` where ``p > 0 == q``.

    ``p`` is not masked where ``q > 0``: ``p*log(q)`` is 0 at ``p == 0`` by itself, and its
    derivative there, ``log(q)``, is the true one.
    """
    del validate  # the public layer has checked the values already
    out_dtype, _, (p, q) = _upcast(xp, p, q)
    finite_p = xp.where(xp.isfinite(p), p, xp.zeros_like(p))  # p == 0 kept, for its gradient
    terms = finite_p * xp.log(_positive_or_one(q, xp))
    unbounded = xp.where(p > 0, xp.full_like(terms, -xp.inf), xp.zeros_like(terms))
    terms = xp.where(q > 0, terms, unbounded)
    terms = xp.where(_invalid(xp, p, q), xp.full_like(terms, xp.nan), terms)
    return xp.astype(0 - xp.sum(terms, axis=axes, keepdims=keepdims), out_dtype)


def js_div(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """``(KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q)/2``.

    The mass differences ``sum(p - m)`` and ``sum(q - m)`` cancel exactly, so the result is a
    sum of non-negative terms alone.
    """
    out_dtype, _, (p, q) = _upcast(xp, p, q)
    both = (p > 0) & (q > 0)
    p1, q1 = _positive_or_one(p, xp), _positive_or_one(q, xp)
    m = p1 / 2 + q1 / 2  # not (p + q)/2, which overflows for two huge entries
    terms = kl_terms(p1, m, xp) + kl_terms(q1, m, xp)
    # Where one of p, q is 0 the pair's terms are the other's times log(2); written so, the
    # zero one's derivative is 0 (its true one is -inf), and no branch adds m's twice over.
    zero = xp.zeros_like(terms)
    alone = (xp.where(p > 0, p1, zero) + xp.where(q > 0, q1, zero)) * math.log(2)
    terms = xp.where(both, terms, alone)
    terms = xp.where(_invalid(xp, p, q), xp.full_like(terms, xp.nan), terms)
    js = xp.sum(terms, axis=axes, keepdims=keepdims) / 2
    return xp.astype(_clipped("js_div", js, validate, xp), out_dtype)


def hellinger(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """``sum((sqrt(p) - sqrt(q))**2) / 2`` along ``axes``: the squared Hellinger distance,
    whose square root the public layer takes (``finish`` in :mod:`kldiv._table`).

    ``sqrt(p) - sqrt(q) = (p - q)/(sqrt(p) + sqrt(q))``, a quotient of two values each exact
    to a rounding, where the difference of square roots would cancel for ``p`` near ``q``.
    """
    del validate  # the public layer has checked the values already; nothing to clip
    out_dtype, _, (p, q) = _upcast(xp, p, q)
    p1, q1 = _positive_or_one(p, xp), _positive_or_one(q, xp)
    zero = xp.zeros_like(p1)
    # sqrt of the placeholders, then masked: the derivative of sqrt at 0 would be infinite
    root_p = xp.where(p > 0, xp.sqrt(p1), zero)
    root_q = xp.where(q > 0, xp.sqrt(q1), zero)
    both = (p > 0) & (q > 0)
    # where one is 0, root_p - root_q is exact: nothing cancels
    diff = xp.where(
        both, (p1 - q1) / xp.where(both, root_p + root_q, xp.ones_like(p1)), root_p - root_q
    )
    terms = xp.where(_invalid(xp, p, q), xp.full_like(diff, xp.nan), diff * diff)
    return xp.astype(xp.sum(terms, axis=axes, keepdims=keepdims) / 2, out_dtype)


def total_variation(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """``sum(|p - q|) / 2`` along ``axes``."""
    del validate  # the public layer has checked the values already; nothing to clip
    out_dtype, _, (p, q) = _upcast(xp, p, q)
    terms = xp.where(_invalid(xp, p, q), xp.full_like(p, xp.nan), xp.abs(p - q))
    return xp.astype(xp.sum(terms, axis=axes, keepdims=keepdims) / 2, out_dtype)


def log_softmax(a: Array, axes: tuple[int, ...], xp: Namespace) -> Array:
    """``a - logsumexp(a)`` along ``axes``; NaN for a row with no finite entry."""
    return _shift(a, _log_sum_exp(a, axes, xp), xp)


def _shift(a: Array, lse: Array, xp: Namespace) -> Array:
    """``a - lse`` for a finite ``lse``, NaN where it is not."""
    finite = xp.isfinite(lse)
    shifted = a - xp.where(finite, lse, xp.zeros_like(lse))
    return xp.where(finite, shifted, xp.full_like(shifted, xp.nan))


def _log_sum_exp(a: Array, axes: tuple[int, ...], xp: Namespace) -> Array:
    peak = xp.max(a, axis=axes, keepdims=True)
    safe = xp.where(xp.isfinite(peak), peak, xp.zeros_like(peak))
    total = xp.sum(xp.exp(a - safe), axis=axes, keepdims=True)
    # a row with no finite entry: -inf (or NaN, for NaN or +inf), without a log(0) warning
    return xp.where(total > 0, safe + xp.log(_positive_or_one(total, xp)), peak)


# (k - 1)/k! for k = 2..8: phi(exp(d)) = d*exp(d) - expm1(d) = sum over k >= 2 of c_k d**k.
# At |d| < 1/128 the first term left out, c_9 d**9, is below 1e-19 of the sum.
_PHI_SERIES = tuple((k - 1) / math.factorial(k) for k in range(2, 9))
_SERIES_BELOW = 1 / 128


def _phi_exp(d: Array, xp: Namespace) -> Array:
    """``phi(exp(d)) / d**2`` for ``|d| < 1/128``, by its series: no cancellation near 0."""
    poly = xp.full_like(d, _PHI_SERIES[-1])
    for c in reversed(_PHI_SERIES[:-1]):
        poly = poly * d + c
    return poly


def logit_terms(la: Array, lb: Array, xp: Namespace, d: Array | None = None) -> Array:
    """``t = p*log(p/q) - p + q >= 0`` from log-probabilities ``la = log p``, ``lb = log q``.

    With ``d = la - lb`` (or the more exact ``d`` given), ``t = q*phi(exp(d))``:

    - ``|d| < 1/128``: ``q*d**2*S(d)`` by a series, which cancels nothing;
    - ``|d| < 1/2``: ``q*(d*E - (E - d))``, ``E = expm1(d)``, from ``d`` alone, so that the
      rounding of ``p`` and ``q`` apart does not show; ``E - d`` loses ``2*eps/|d|`` of
      itself, under 6e-14;
    - elsewhere ``p*d - (p - q)``, whose parts do not cancel.

    Each term is clipped at 0, which it can only miss by a rounding.
    """
    p = xp.exp(la)
    q = xp.exp(lb)
    zero = xp.zeros_like(la)
    finite = (la > -xp.inf) & (lb > -xp.inf)
    if d is None:
        d = xp.where(finite, la, zero) - xp.where(finite, lb, zero)
    d = xp.where(finite, d, zero)
    magnitude = xp.abs(d)
    small = magnitude < _SERIES_BELOW
    moderate = magnitude < _NEAR
    d_small = xp.where(small, d, zero)
    d_moderate = xp.where(moderate, d, zero)
    e = xp.expm1(d_moderate)
    t = xp.where(moderate, q * (d_moderate * e - (e - d_moderate)), p * d - (p - q))
    t = xp.where(small, q * d_small * d_small * _phi_exp(d_small, xp), t)
    # Conditions that are False for NaN, so that a NaN logit gives NaN and never a number.
    t = xp.where(t < 0, xp.zeros_like(t), t)
    t = xp.where(lb == -xp.inf, xp.full_like(t, xp.inf), t)
    return xp.where(la == -xp.inf, q, t)


def _two_diff(a: Array, b: Array) -> tuple[Array, Array]:
    """``a - b`` as ``hi + lo`` exactly (Knuth's TwoSum of ``a`` and ``-b``)."""
    hi = a - b
    b_part = hi - a
    a_part = hi - b_part
    return hi, (a - a_part) - (b + b_part)


def _log_ratios(
    a: Array, b: Array, axes: tuple[int, ...], xp: Namespace
) -> tuple[Array, Array, Array]:
    """``(d, la, lb)``: ``la = log softmax(a)``, ``lb = log softmax(b)``, and ``d = la - lb``
    exact to a rounding relative to each ``d``.

    ``d = (a - b) - D`` with ``D = lse(a) - lse(b)``. Taking ``D`` as the difference of two
    rounded log-sum-exps leaves it off by a rounding of their size, which is all of ``d`` for
    near-identical rows. So ``D`` is first guessed that way (``c``), then corrected by what the
    softmaxes summing to 1 says exactly: ``sum(q*exp(d0)) = exp(D - c)`` with
    ``d0 = (a - b) - c``, so ``D - c = log1p(sum(q*expm1(d0)))``, a small sum of terms each
    exact to a rounding. ``a - b`` is kept exact as ``hi + lo``. Entries where ``a`` or ``b``
    is ``-inf`` get 0, for :func:`logit_terms` to mask.
    """
    both = (a > -xp.inf) & (b > -xp.inf)
    zero = xp.zeros_like(a)
    lse_a, lse_b = _log_sum_exp(a, axes, xp), _log_sum_exp(b, axes, xp)
    c = lse_a - lse_b
    c = xp.where(xp.isfinite(c), c, xp.zeros_like(c))
    hi, lo = _two_diff(xp.where(both, a, zero), xp.where(both, b, zero))
    d0 = xp.where(both, (hi - c) + lo, zero)
    lb = _shift(b, lse_b, xp)
    q = xp.exp(lb)
    moderate = xp.abs(d0) < 1
    d_mod = xp.where(moderate, d0, zero)
    # q*expm1(d0), or exp(lb + d0) - q where expm1 alone could overflow and the two do not
    # cancel; p = 0 (a = -inf) takes away all of q; q = 0 (b = -inf) adds nothing
    weight = xp.where(moderate, q * xp.expm1(d_mod), xp.exp(lb + xp.where(moderate, zero, d0)) - q)
    weight = xp.where(both, weight, xp.where(b > -xp.inf, -q, zero))
    total = xp.sum(weight, axis=axes, keepdims=True)
    # > -1 but for a row with no finite entry in a, which comes out NaN in the end
    usable = (total > -1) & (total < xp.inf)
    correction = xp.log1p(xp.where(usable, total, xp.zeros_like(total)))
    return d0 - correction, _shift(a, lse_a, xp), lb


def kl_div_logits(
    a: Array, b: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """KL(softmax(a) || softmax(b)) along ``axes``, all in log space.

    Both softmaxes sum to 1 exactly in real arithmetic, so no mass difference is added. A NaN
    or ``+inf`` logit, or a row with no finite one, gives NaN.
    """
    out_dtype, _, (a, b) = _upcast(xp, a, b)
    a, b = xp.broadcast_arrays(a, b)
    d, la, lb = _log_ratios(a, b, axes, xp)
    terms = logit_terms(la, lb, xp, d)
    bad = xp.isnan(a) | xp.isnan(b) | (a == xp.inf) | (b == xp.inf)
    terms = xp.where(bad, xp.full_like(terms, xp.nan), terms)
    kl = xp.sum(terms, axis=axes, keepdims=keepdims)
    return xp.astype(_clipped("kl_div_logits", kl, validate, xp), out_dtype)


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
