"""The float64 NumPy reference of every divergence in kldiv's table, and the table's groups.

Every row of :data:`kldiv._table.DIVERGENCES` needs a reference here (a test says so); the
tests that parametrize over the table take their functions from the groups below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np
import scipy.spatial.distance
import scipy.special

import kldiv
from kldiv._table import DIVERGENCES
from tests._helpers import log_softmax, random_distributions


def _js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = (p + q) / 2
    return (np.sum(p * np.log(p / m), axis=-1) + np.sum(q * np.log(q / m), axis=-1)) / 2


def _kl_logits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    la, lb = log_softmax(a), log_softmax(b)
    return np.sum(np.exp(la) * (la - lb), axis=-1)


def _hellinger(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p, q = np.broadcast_arrays(p, q)
    rows = [
        scipy.spatial.distance.euclidean(np.sqrt(a), np.sqrt(b)) / np.sqrt(2)
        for a, b in zip(p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1]), strict=True)
    ]
    return np.asarray(rows).reshape(p.shape[:-1])


# The textbook formula of each, in float64, for strictly positive p and q (logits for
# kl_div_logits), the distributions along the last axis.
REFERENCES: dict[str, Callable[..., np.ndarray]] = {
    "rel_entr": lambda p, q: scipy.special.rel_entr(p, np.broadcast_to(q, np.shape(p))),
    "kl_div": lambda p, q: np.sum(scipy.special.rel_entr(p, q), axis=-1),
    "kl_div_logits": _kl_logits,
    "entropy": lambda p: -np.sum(p * np.log(p), axis=-1),
    "cross_entropy": lambda p, q: -np.sum(p * np.log(q), axis=-1),
    "js_div": _js,
    "hellinger": _hellinger,
    "total_variation": lambda p, q: np.sum(np.abs(p - q), axis=-1) / 2,
}

NAMES = tuple(DIVERGENCES)
# reductions of probability distributions, of one or two arguments
PROBABILITY_REDUCTIONS = tuple(
    row.name for row in DIVERGENCES.values() if row.reduces and not row.logits
)
PAIRS = tuple(name for name in PROBABILITY_REDUCTIONS if len(DIVERGENCES[name].inputs) == 2)
REDUCTIONS = tuple(row.name for row in DIVERGENCES.values() if row.reduces)
WITH_BASE = tuple(row.name for row in DIVERGENCES.values() if row.base)


def reference(name: str, *arrays: Any) -> np.ndarray:
    """``name``'s reference on float64 copies of as many of ``arrays`` as it takes."""
    arity = len(DIVERGENCES[name].inputs)
    return REFERENCES[name](*(np.asarray(x, dtype=np.float64) for x in arrays[:arity]))


def call(name: str, *arrays: Any, **options: Any) -> Any:
    """``kldiv.<name>`` of as many of ``arrays`` as it takes."""
    return getattr(kldiv, name)(*arrays[: len(DIVERGENCES[name].inputs)], **options)


def inputs(name: str, shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distributions along the last axis, or logits for ``kl_div_logits``: always two, for
    :func:`call` to take what it needs."""
    rng = np.random.default_rng(seed)
    if DIVERGENCES[name].logits:
        return rng.standard_normal(shape) * 3, rng.standard_normal(shape) * 3
    return random_distributions(rng, shape), random_distributions(rng, shape)


def mp_softmax_kl_rows(
    pred: np.ndarray, target: np.ndarray, norm_target: bool
) -> tuple[list[Any], list[list[Any]]]:
    """PuzzleLib's KLDivergence loss row by row in 50-digit mpmath, on the exact floats:
    each row's error sum(y*(log(y) - log(s))), s = softmax(pred) and y the target (entries
    of 0 adding nothing) or its softmax (``norm_target``), and its grad (y - s)/N, N the
    rows; both as mpf, for the caller to round or sum."""
    rows = len(pred)
    errors, grads = [], []
    with mpmath.workdps(50):
        for br, yr in zip(np.asarray(pred).tolist(), np.asarray(target).tolist(), strict=True):
            log_norm = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in br))
            log_s = [x - log_norm for x in br]
            if norm_target:
                log_t = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in yr))
                log_y = [x - log_t for x in yr]
                y = [mpmath.exp(v) for v in log_y]
            else:
                y = [mpmath.mpf(v) for v in yr]
                log_y = [mpmath.log(v) if v > 0 else None for v in y]
            errors.append(
                mpmath.fsum(
                    v * (ly - ls)
                    for v, ly, ls in zip(y, log_y, log_s, strict=True)
                    if ly is not None
                )
            )
            grads.append([(v - mpmath.exp(ls)) / rows for v, ls in zip(y, log_s, strict=True)])
    return errors, grads


def naive_softmax_kl_rows(pred: np.ndarray, target: np.ndarray, norm_target: bool) -> np.ndarray:
    """The same loss's row errors by the textbook form in the inputs' own dtype,
    sum(y*(log(y) - log_softmax(pred))), y the target (entries of 0 adding nothing) or its
    softmax: the naive side the near-identical loss tests and accuracy_kernels.py compare."""
    log_s = log_softmax(pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_y = log_softmax(target) if norm_target else np.log(target)
        y = np.exp(log_y) if norm_target else target
        return np.sum(np.where(y > 0, y * (log_y - log_s), 0), axis=-1)
