"""The public functions on every backend, against NumPy, SciPy and the worked example."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats

import kldiv
from tests._helpers import asarray, assert_result, dtype_of, random_distributions, to_numpy

# The worked example of the TensorFlow Q&A thread (shared/seeds/000_*.txt).
EXAMPLE_P = [[0.25, 0.1, 0.65], [0.8, 0.15, 0.05]]
EXAMPLE_Q = [[0.7, 0.2, 0.1], [0.15, 0.8, 0.05]]
EXAMPLE_KL = [0.88995184, 1.08808468]


def rtol(xp, dtype: str) -> float:
    """What a float64 NumPy reference can ask of a result of ``dtype``.

    float32 results are computed in float64 and rounded once, except on a device without
    float64 (JAX by default), which computes in float32.
    """
    if dtype == "float64":
        return 1e-12
    info = xp.__array_namespace_info__()
    has64 = "float64" in info.dtypes(device=info.default_device(), kind="real floating")
    return 2e-6 if has64 else 1e-4


def naive_kl(p: np.ndarray, q: np.ndarray, axis) -> np.ndarray:
    """The formula everyone reaches for, in float64: right on strictly positive input."""
    p, q = p.astype(np.float64), q.astype(np.float64)
    return np.sum(p * np.log(p / q), axis=axis)


SHAPES = [
    pytest.param((1000,), -1, id="1d"),
    pytest.param((4096, 1000), -1, id="4096x1000"),
    pytest.param((3, 6, 8, 5), (1, 2), id="4d-tuple-axis"),
    pytest.param((6, 8, 5), (0, 2), id="3d-tuple-axis"),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("shape", "axis"), SHAPES)
def test_kl_div_matches_naive_numpy(xp, dtype, shape, axis):
    rng = np.random.default_rng(0)
    p_np = random_distributions(rng, shape, axis).astype(dtype)
    q_np = random_distributions(rng, shape, axis).astype(dtype)
    p, q = asarray(xp, p_np, dtype), asarray(xp, q_np, dtype)
    expected = naive_kl(p_np, q_np, axis)
    result = kldiv.kl_div(p, q, axis=axis)
    got = assert_result(result, p, dtype=dtype_of(xp, dtype), shape=expected.shape)
    np.testing.assert_allclose(got, expected, rtol=rtol(xp, dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keepdims_and_broadcasting_one_q_against_a_batch(xp, dtype):
    rng = np.random.default_rng(1)
    p_np = random_distributions(rng, (5, 7)).astype(dtype)
    q_np = random_distributions(rng, (7,)).astype(dtype)
    p, q = asarray(xp, p_np, dtype), asarray(xp, q_np, dtype)
    result = kldiv.kl_div(p, q, keepdims=True)
    got = assert_result(result, p, dtype=dtype_of(xp, dtype), shape=(5, 1))
    expected = naive_kl(p_np, q_np[None, :], -1)[:, None]
    np.testing.assert_allclose(got, expected, rtol=rtol(xp, dtype))
    reversed_result = kldiv.kl_div(q, p)
    got = assert_result(reversed_result, p, dtype=dtype_of(xp, dtype), shape=(5,))
    np.testing.assert_allclose(got, naive_kl(q_np[None, :], p_np, -1), rtol=rtol(xp, dtype))


def test_worked_example(xp):
    p, q = asarray(xp, EXAMPLE_P, "float64"), asarray(xp, EXAMPLE_Q, "float64")
    got = assert_result(kldiv.kl_div(p, q), p, dtype=xp.float64, shape=(2,))
    np.testing.assert_allclose(got, EXAMPLE_KL, rtol=1e-8)


def test_worked_example_in_float32(xp):
    p, q = asarray(xp, EXAMPLE_P, "float32"), asarray(xp, EXAMPLE_Q, "float32")
    got = assert_result(kldiv.kl_div(p, q, axis=1), p, dtype=xp.float32, shape=(2,))
    np.testing.assert_allclose(got, EXAMPLE_KL, rtol=1e-6)


ZEROS_P = [0.0, 0.0, 0.5, 0.3, 0.2, 0.0]
ZEROS_Q = [0.0, 0.4, 0.0, 0.3, 0.1, 0.2]


def test_rel_entr_zero_conventions_match_scipy(xp):
    p, q = asarray(xp, ZEROS_P, "float64"), asarray(xp, ZEROS_Q, "float64")
    got = assert_result(kldiv.rel_entr(p, q), p, dtype=xp.float64, shape=(6,))
    expected = scipy.special.rel_entr(ZEROS_P, ZEROS_Q)
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    assert got[0] == 0.0
    assert got[1] == 0.0
    assert got[2] == np.inf


def test_rel_entr_matches_scipy_on_random_pairs(xp):
    rng = np.random.default_rng(2)
    p_np = rng.uniform(0, 1, 500) * (rng.uniform(size=500) > 0.2)
    q_np = rng.uniform(0, 1, 500) * (rng.uniform(size=500) > 0.2)
    p, q = asarray(xp, p_np, "float64"), asarray(xp, q_np, "float64")
    got = assert_result(kldiv.rel_entr(p, q, validate=True), p, dtype=xp.float64, shape=(500,))
    np.testing.assert_allclose(got, scipy.special.rel_entr(p_np, q_np), rtol=1e-13, atol=0)


def test_rel_entr_survives_tiny_q_where_p_over_q_overflows(xp):
    p, q = asarray(xp, [1.0], "float64"), asarray(xp, [1e-310], "float64")
    got = to_numpy(kldiv.rel_entr(p, q))
    np.testing.assert_allclose(got, [-math.log(1e-310)], rtol=1e-14)


def test_kl_div_zeros_in_p_and_q(xp):
    p = asarray(xp, [[0.0, 0.5, 0.5], [0.5, 0.5, 0.0]], "float64")
    q = asarray(xp, [[0.2, 0.4, 0.4], [0.5, 0.0, 0.5]], "float64")
    got = assert_result(kldiv.kl_div(p, q), p, dtype=xp.float64, shape=(2,))
    expected = scipy.special.rel_entr(to_numpy(p), to_numpy(q)).sum(axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    assert got[1] == np.inf
    assert not np.isnan(got).any()


def test_kl_div_zero_in_p_never_gives_nan(xp):
    p = asarray(xp, [0.0, 1.0], "float32")
    q = asarray(xp, [0.0, 1.0], "float32")
    got = to_numpy(kldiv.kl_div(p, q))
    assert got == 0.0


@pytest.mark.parametrize("base", [None, 2, 10])
def test_kl_div_and_entropy_match_scipy_stats(xp, base):
    rng = np.random.default_rng(3)
    p_np = random_distributions(rng, (4, 50))
    q_np = random_distributions(rng, (4, 50))
    p, q = asarray(xp, p_np, "float64"), asarray(xp, q_np, "float64")
    kl = assert_result(kldiv.kl_div(p, q, base=base), p, dtype=xp.float64, shape=(4,))
    np.testing.assert_allclose(kl, scipy.stats.entropy(p_np, q_np, base=base, axis=-1), rtol=1e-12)
    h = assert_result(kldiv.entropy(p, base=base), p, dtype=xp.float64, shape=(4,))
    np.testing.assert_allclose(h, scipy.stats.entropy(p_np, base=base, axis=-1), rtol=1e-12)


def test_cross_entropy_and_js_div_against_numpy(xp):
    rng = np.random.default_rng(4)
    p_np = random_distributions(rng, (3, 40))
    q_np = random_distributions(rng, (3, 40))
    p, q = asarray(xp, p_np, "float64"), asarray(xp, q_np, "float64")
    ce = assert_result(kldiv.cross_entropy(p, q), p, dtype=xp.float64, shape=(3,))
    np.testing.assert_allclose(ce, -np.sum(p_np * np.log(q_np), axis=-1), rtol=1e-13)
    js = assert_result(kldiv.js_div(p, q, base=2), p, dtype=xp.float64, shape=(3,))
    m = (p_np + q_np) / 2
    expected = (naive_kl(p_np, m, -1) + naive_kl(q_np, m, -1)) / 2 / math.log(2)
    np.testing.assert_allclose(js, expected, rtol=1e-10)
    from scipy.spatial.distance import jensenshannon

    np.testing.assert_allclose(np.sqrt(js), jensenshannon(p_np, q_np, base=2, axis=-1), rtol=1e-10)


def test_cross_entropy_and_entropy_conventions(xp):
    p = asarray(xp, [0.0, 0.5, 0.5], "float64")
    q = asarray(xp, [0.0, 0.5, 0.5], "float64")
    assert to_numpy(kldiv.entropy(p)) == pytest.approx(math.log(2))
    assert to_numpy(kldiv.cross_entropy(p, q)) == pytest.approx(math.log(2))
    q0 = asarray(xp, [0.5, 0.5, 0.0], "float64")
    assert to_numpy(kldiv.cross_entropy(p, q0)) == np.inf
    js = to_numpy(kldiv.js_div(p, q0))
    assert np.isfinite(js)
    assert 0 < js <= math.log(2)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_every_floating_dtype_comes_back_as_itself(xp, dtype):
    dt = dtype_of(xp, dtype)
    p = asarray(xp, EXAMPLE_P, dtype)
    q = asarray(xp, EXAMPLE_Q, dtype)
    tol = {"float16": 2e-3, "float32": 1e-6, "float64": 1e-12}[dtype]
    p_np, q_np = to_numpy(p).astype(np.float64), to_numpy(q).astype(np.float64)
    for func, expected in [
        (kldiv.kl_div, naive_kl(p_np, q_np, -1)),
        (kldiv.cross_entropy, -np.sum(p_np * np.log(q_np), axis=-1)),
        (kldiv.js_div, None),
    ]:
        got = assert_result(func(p, q, validate=dtype != "float16"), p, dtype=dt, shape=(2,))
        if expected is not None:
            np.testing.assert_allclose(got, expected, rtol=tol)
    got = assert_result(kldiv.entropy(p), p, dtype=dt, shape=(2,))
    np.testing.assert_allclose(got, -np.sum(p_np * np.log(p_np), axis=-1), rtol=tol)
    got = assert_result(kldiv.rel_entr(p, q), p, dtype=dt, shape=(2, 3))
    np.testing.assert_allclose(got, p_np * np.log(p_np / q_np), rtol=tol)
    got = assert_result(kldiv.kl_div_logits(p, q), p, dtype=dt, shape=(2,))
    assert np.all(np.isfinite(got))


def test_mixed_dtypes_promote(xp):
    p = asarray(xp, EXAMPLE_P, "float32")
    q = asarray(xp, EXAMPLE_Q, "float64")
    got = assert_result(kldiv.kl_div(p, q), p, dtype=xp.float64, shape=(2,))
    np.testing.assert_allclose(got, naive_kl(to_numpy(p), to_numpy(q), -1), rtol=1e-12)


def test_sequences_are_taken_as_arrays_of_the_other_argument(xp):
    q = asarray(xp, EXAMPLE_Q, "float64")
    got = assert_result(kldiv.kl_div(EXAMPLE_P, q), q, dtype=xp.float64, shape=(2,))
    np.testing.assert_allclose(got, EXAMPLE_KL, rtol=1e-8)


def test_plain_lists_give_numpy():
    result = kldiv.kl_div(EXAMPLE_P, EXAMPLE_Q)
    assert isinstance(result, np.ndarray)
    np.testing.assert_allclose(result, EXAMPLE_KL, rtol=1e-8)


def test_one_dimensional_input_gives_a_zero_dimensional_array(xp):
    p = asarray(xp, EXAMPLE_P[0], "float64")
    q = asarray(xp, EXAMPLE_Q[0], "float64")
    for result in (kldiv.kl_div(p, q), kldiv.entropy(p), kldiv.kl_div_logits(p, q)):
        assert_result(result, p, dtype=xp.float64, shape=())


# ---- logits ---------------------------------------------------------------------------------


def log_softmax_np(a: np.ndarray, axis) -> np.ndarray:
    a = a.astype(np.float64)
    shifted = a - a.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("shape", "axis"), [((64, 300), -1), ((4, 5, 6), (0, 2))])
def test_kl_div_logits_matches_the_probability_form(xp, dtype, shape, axis):
    rng = np.random.default_rng(5)
    a_np = (3 * rng.standard_normal(shape)).astype(dtype)
    b_np = (3 * rng.standard_normal(shape)).astype(dtype)
    a, b = asarray(xp, a_np, dtype), asarray(xp, b_np, dtype)
    la, lb = log_softmax_np(a_np, axis), log_softmax_np(b_np, axis)
    expected = np.sum(np.exp(la) * (la - lb), axis=axis)
    got = assert_result(
        kldiv.kl_div_logits(a, b, axis=axis), a, dtype=dtype_of(xp, dtype), shape=expected.shape
    )
    np.testing.assert_allclose(got, expected, rtol=10 * rtol(xp, dtype), atol=1e-12)


def test_kl_div_logits_stays_finite_for_a_gap_of_1e4_in_float32(xp):
    a_np = np.array([[0.0, 1e4, -1e4], [5e3, -5e3, 0.0]], dtype=np.float32)
    b_np = np.array([[1e4, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    a, b = asarray(xp, a_np, "float32"), asarray(xp, b_np, "float32")
    with np.errstate(divide="ignore", invalid="ignore"):
        sa, sb = scipy.special.softmax(a_np, axis=-1), scipy.special.softmax(b_np, axis=-1)
        naive = np.sum(sa * np.log(sa / sb), axis=-1)
    assert not np.all(np.isfinite(naive))  # what kldiv exists to avoid
    got = assert_result(kldiv.kl_div_logits(a, b), a, dtype=xp.float32, shape=(2,))
    # Row 0: p is all on entry 1 (logit 1e4), q all on entry 0: KL = 1e4 - 0 (b's gap).
    # Row 1: p all on entry 0, q uniform: KL = log(3).
    np.testing.assert_allclose(got, [1e4, math.log(3)], rtol=1e-6)


def test_kl_div_logits_accepts_log_probabilities_with_minus_inf(xp):
    p_np = np.array([0.0, 0.25, 0.75])
    q_np = np.array([0.5, 0.5, 0.0])
    with np.errstate(divide="ignore"):
        lp, lq = np.log(p_np), np.log(q_np)
    a, b = asarray(xp, lp, "float64"), asarray(xp, lq, "float64")
    assert to_numpy(kldiv.kl_div_logits(a, b)) == np.inf
    got = to_numpy(kldiv.kl_div_logits(b, a))
    assert got == np.inf
    got = to_numpy(kldiv.kl_div_logits(a, a))
    assert got == 0.0
    a2 = asarray(xp, np.log([0.5, 0.5]), "float64")
    b2 = asarray(xp, np.log([0.25, 0.75]), "float64")
    np.testing.assert_allclose(
        to_numpy(kldiv.kl_div_logits(a2, b2)),
        naive_kl(np.array([0.5, 0.5]), np.array([0.25, 0.75]), -1),
        rtol=1e-14,
    )


def test_kl_div_logits_is_shift_invariant(xp):
    a = asarray(xp, [1.0, 2.0, 3.0], "float64")
    b = asarray(xp, [0.5, 0.0, -1.0], "float64")
    shifted = asarray(xp, [101.0, 102.0, 103.0], "float64")
    np.testing.assert_allclose(
        to_numpy(kldiv.kl_div_logits(a, b)), to_numpy(kldiv.kl_div_logits(shifted, b)), rtol=1e-13
    )


def test_unchecked_nan_gives_nan_never_a_number(xp):
    p = asarray(xp, [[0.5, np.nan], [0.5, 0.5]], "float64")
    q = asarray(xp, [[0.5, 0.5], [0.5, 0.5]], "float64")
    for func in (kldiv.kl_div, kldiv.cross_entropy, kldiv.js_div, kldiv.kl_div_logits):
        got = to_numpy(func(p, q, validate=False))
        assert np.isnan(got[0]), func.__name__
        assert np.isfinite(got[1]), func.__name__
        got = to_numpy(func(q, p, validate=False))
        assert np.isnan(got[0]), func.__name__
    assert np.isnan(to_numpy(kldiv.entropy(p, validate=False))[0])
    assert np.isnan(to_numpy(kldiv.rel_entr(p, q, validate=False))[0, 1])


def test_torch_autograd_flows_through_without_warnings():
    torch = pytest.importorskip("torch")
    p = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([[0.3, 0.3, 0.4]], dtype=torch.float64)
    kldiv.kl_div(p, q).sum().backward()
    # d KL / d p = log(p / q) + 1
    expected = np.log(np.array([0.2, 0.3, 0.5]) / np.array([0.3, 0.3, 0.4])) + 1
    np.testing.assert_allclose(p.grad.numpy()[0], expected, rtol=1e-12)


def test_jax_jit_and_grad_trace_through():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    a, b = jnp.asarray([0.1, 0.2, 0.3]), jnp.zeros(3)
    jitted = jax.jit(kldiv.kl_div_logits)(a, b)
    # eager runs the NumPy path in float64; jitted, the generic code in JAX's float32 (no
    # x64): float32 roundings of a KL of 3e-3 apart
    assert float(jitted) == pytest.approx(float(kldiv.kl_div_logits(a, b)), rel=1e-5)
    grad = jax.grad(lambda x: kldiv.kl_div_logits(x, b))(a)
    # d KL(softmax(a) || uniform) / d a = p * (log p - sum(p log p)) for p = softmax(a)
    p = np.exp(np.asarray(a) - np.log(np.exp(np.asarray(a)).sum()))
    expected = p * (np.log(p) - np.sum(p * np.log(p)))
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-4, atol=1e-7)


# Unchecked measures (validate=False): sum(p*log(p/q)) right to float precision.


def _mp_unnormalised(p: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """``sum(p*log(p/q))`` to 50 digits, and ``sum(|p*log(p/q)|)``, the scale a sum of terms
    each exact to a rounding can be asked to be right to."""
    import mpmath

    with mpmath.workdps(50):
        terms = [
            mpmath.mpf(float(a)) * mpmath.log(mpmath.mpf(float(a)) / mpmath.mpf(float(b)))
            if a > 0
            else mpmath.mpf(0)
            for a, b in zip(p, q, strict=True)
        ]
        return float(mpmath.fsum(terms)), float(mpmath.fsum(abs(t) for t in terms))


UNNORMALISED_EXAMPLES = [
    # (p, q, dtype, true value): each gave a plausible wrong number (issue 9, item 1)
    ([0.5, 0.0], [0.25, 1e17], "float64", 0.34657359027997264),
    ([1.0, 1e-3], [1.0, 1e10], "float32", -0.029933606208922596),
    ([0.5, 0.5], [0.5, 1e16], "float64", -18.767254334232337),
]


@pytest.mark.parametrize(("p", "q", "dtype", "expected"), UNNORMALISED_EXAMPLES)
def test_unchecked_measures_do_not_cancel(xp, p, q, dtype, expected):
    got = float(
        to_numpy(kldiv.kl_div(asarray(xp, p, dtype), asarray(xp, q, dtype), validate=False))
    )
    assert math.isclose(got, expected, rel_tol=rtol(xp, dtype)), got


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unchecked_measures_over_ratios_from_1e_minus_300_to_1e300(xp, dtype):
    """Entries spread over 1e-150..1e150 (float64; 1e-18..1e18 for float32), so that ratios
    span 1e-300..1e300, zeros in p: the result within a few roundings of sum(|terms|)."""
    rng = np.random.default_rng(11)
    span = 150 if dtype == "float64" else 18
    rows, n = 64, 6
    p_np = 10.0 ** rng.uniform(-span, span, size=(rows, n))
    q_np = 10.0 ** rng.uniform(-span, span, size=(rows, n))
    p_np[rng.uniform(size=(rows, n)) < 0.2] = 0.0
    near = rng.uniform(size=(rows, n)) < 0.3  # entries with p close to q, as well
    p_np[near] = q_np[near] * (1 + 1e-6 * rng.standard_normal(near.sum()))
    p_np, q_np = p_np.astype(dtype), q_np.astype(dtype)
    got = to_numpy(kldiv.kl_div(asarray(xp, p_np, dtype), asarray(xp, q_np, dtype), validate=False))
    eps = np.finfo(np.float64 if rtol(xp, dtype) < 1e-5 else np.float32).eps
    for row in range(rows):
        expected, scale = _mp_unnormalised(p_np[row], q_np[row])
        rounding = np.finfo(dtype).eps * abs(expected)  # of the result into its dtype
        assert abs(got[row] - expected) <= 8 * n * eps * scale + rounding, (row, got[row])


@pytest.mark.parametrize("func", [kldiv.kl_div, kldiv.cross_entropy, kldiv.js_div, kldiv.rel_entr])
@pytest.mark.parametrize(
    ("p_row", "q_row"),
    [
        pytest.param([0.0, 0.5], [np.inf, 0.5], id="q-inf-under-p-0"),
        pytest.param([np.inf, 0.5], [0.5, 0.5], id="p-inf"),
        pytest.param([0.5, 0.5], [0.5, np.inf], id="q-inf"),
        pytest.param([-0.5, 1.5], [0.5, 0.5], id="p-negative"),
        pytest.param([0.5, 0.5], [-0.5, 1.5], id="q-negative"),
        pytest.param([-0.5, 1.5], [-0.5, 1.5], id="both-negative"),
        pytest.param([np.nan, 1.0], [0.5, 0.5], id="p-nan"),
        pytest.param([0.0, 1.0], [np.nan, 1.0], id="q-nan-under-p-0"),
    ],
)
def test_unchecked_invalid_input_is_nan_on_every_library(xp, func, p_row, q_row):
    p, q = asarray(xp, [p_row], "float64"), asarray(xp, [q_row], "float64")
    got = to_numpy(func(p, q, validate=False))
    assert np.isnan(got).any() if func is kldiv.rel_entr else np.isnan(got).all(), got
    if func is not kldiv.rel_entr:
        return
    for bad, value in zip(~np.isfinite(p_row) | ~np.isfinite(q_row), got[0], strict=True):
        assert np.isnan(value) or not bad


@pytest.mark.parametrize("row", [[np.inf, 0.0], [-0.5, 1.5], [np.nan, 1.0]])
def test_unchecked_invalid_entropy_is_nan(xp, row):
    assert np.isnan(to_numpy(kldiv.entropy(asarray(xp, [row], "float64"), validate=False))).all()


def test_entropy_of_a_point_mass_is_zero_not_minus_zero(xp):
    got = to_numpy(kldiv.entropy(asarray(xp, [[1.0, 0.0], [0.0, 1.0]], "float64")))
    assert not np.signbit(got).any(), got
    got = to_numpy(
        kldiv.cross_entropy(asarray(xp, [1.0, 0.0], "float64"), asarray(xp, [1.0, 0.0], "float64"))
    )
    assert not np.signbit(got), got
