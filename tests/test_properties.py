"""Properties every divergence must have, searched for counterexamples with hypothesis."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import kldiv
from tests._helpers import asarray, to_numpy

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def distribution_pairs(draw, *, zeros_in_p: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 distributions of one length; ``p`` may hold zeros, ``q`` is positive."""
    n = draw(st.integers(1, 24))
    weights = st.floats(1e-6, 1e6, allow_nan=False) | st.floats(1e-300, 1.0)
    p = draw(arrays(np.float64, n, elements=weights | st.just(0.0) if zeros_in_p else weights))
    q = draw(arrays(np.float64, n, elements=weights))
    if p.sum() == 0:
        p[0] = 1.0
    return p / p.sum(), q / q.sum()


@SETTINGS
@given(pair=distribution_pairs())
def test_kl_is_non_negative_and_zero_against_itself(xp, pair):
    p_np, q_np = pair
    p, q = asarray(xp, p_np, "float64"), asarray(xp, q_np, "float64")
    assert to_numpy(kldiv.kl_div(p, q)) >= 0
    assert to_numpy(kldiv.kl_div(p, p)) == 0
    assert to_numpy(kldiv.kl_div(q, q)) == 0


@SETTINGS
@given(pair=distribution_pairs())
def test_kl_is_cross_entropy_minus_entropy(xp, pair):
    p_np, q_np = pair
    p, q = asarray(xp, p_np, "float64"), asarray(xp, q_np, "float64")
    kl = float(to_numpy(kldiv.kl_div(p, q)))
    ce = float(to_numpy(kldiv.cross_entropy(p, q)))
    h = float(to_numpy(kldiv.entropy(p)))
    assert h >= 0
    assert math.isclose(kl, ce - h, rel_tol=1e-9, abs_tol=1e-13 * max(1.0, ce))


@SETTINGS
@given(pair=distribution_pairs())
def test_js_is_symmetric_and_between_0_and_log2(xp, pair):
    p_np, q_np = pair
    p, q = asarray(xp, p_np, "float64"), asarray(xp, q_np, "float64")
    forward = float(to_numpy(kldiv.js_div(p, q)))
    backward = float(to_numpy(kldiv.js_div(q, p)))
    assert forward == backward
    assert 0 <= forward <= math.log(2) * (1 + 1e-14)
    assert 0 <= float(to_numpy(kldiv.js_div(p, q, base=2))) <= 1 + 1e-14


@SETTINGS
@given(pair=distribution_pairs(zeros_in_p=False))
def test_logits_form_equals_probability_form(xp, pair):
    p_np, q_np = pair
    p, q = asarray(xp, p_np, "float64"), asarray(xp, q_np, "float64")
    from_probs = float(to_numpy(kldiv.kl_div(p, q)))
    a, b = asarray(xp, np.log(p_np), "float64"), asarray(xp, np.log(q_np), "float64")
    from_logits = float(to_numpy(kldiv.kl_div_logits(a, b)))
    assert math.isclose(from_logits, from_probs, rel_tol=1e-9, abs_tol=1e-14)
    shifted = asarray(xp, np.log(p_np) + 7.0, "float64")
    assert math.isclose(
        float(to_numpy(kldiv.kl_div_logits(shifted, b))), from_probs, rel_tol=1e-9, abs_tol=1e-14
    )


@SETTINGS
@given(pair=distribution_pairs())
def test_rel_entr_sums_to_kl(xp, pair):
    p_np, q_np = pair
    p, q = asarray(xp, p_np, "float64"), asarray(xp, q_np, "float64")
    kl = float(to_numpy(kldiv.kl_div(p, q)))
    summed = float(np.sum(to_numpy(kldiv.rel_entr(p, q))))
    assert math.isclose(kl, max(summed, 0.0), rel_tol=1e-9, abs_tol=1e-14)
