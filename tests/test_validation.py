"""Bad input gets a clear error naming the argument, on every backend; input is never changed."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
import scipy.stats

import kldiv
from tests._helpers import asarray, to_numpy

P = [[0.25, 0.1, 0.65], [0.8, 0.15, 0.05]]
Q = [[0.7, 0.2, 0.1], [0.15, 0.8, 0.05]]
PAIR_FUNCS = [kldiv.kl_div, kldiv.cross_entropy, kldiv.js_div]


def eager(xp) -> bool:
    """Whether the backend's values can be checked (Dask's cannot without computing)."""
    return not array_api_compat.is_dask_namespace(xp)


@pytest.mark.parametrize("func", [*PAIR_FUNCS, kldiv.rel_entr, kldiv.kl_div_logits])
def test_integer_dtype_is_a_type_error_naming_the_argument(xp, func):
    p = xp.asarray(np.array([[1, 0, 0]]))
    q = asarray(xp, [[0.5, 0.25, 0.25]], "float32")
    first, second = ("a", "b") if func is kldiv.kl_div_logits else ("p", "q")
    with pytest.raises(TypeError, match=rf"^{first} must have a real floating dtype .*int"):
        func(p, q)
    with pytest.raises(TypeError, match=rf"^{second} must have a real floating dtype"):
        func(q, p)


def test_entropy_integer_dtype(xp):
    with pytest.raises(TypeError, match=r"^p must have a real floating dtype"):
        kldiv.entropy(xp.asarray(np.array([1, 0])))


@pytest.mark.parametrize("func", [*PAIR_FUNCS, kldiv.rel_entr])
@pytest.mark.parametrize(
    ("bad", "kind", "index"),
    [
        (-0.1, "a negative", r"\(1, 2\)"),
        (np.nan, "a NaN", r"\(1, 2\)"),
        (np.inf, "an infinite", r"\(1, 2\)"),
    ],
)
def test_bad_probability_names_argument_kind_and_index(xp, func, bad, kind, index):
    if not eager(xp):
        pytest.skip("value checks are skipped for lazy arrays (documented)")
    p_np = np.array(P)
    p_np[1, 2] = bad
    p, q = asarray(xp, p_np, "float64"), asarray(xp, Q, "float64")
    with pytest.raises(ValueError, match=rf"^p has {kind} entry .* at index {index}"):
        func(p, q)
    with pytest.raises(ValueError, match=rf"^q has {kind} entry .* at index {index}"):
        func(q, p)


def test_entropy_bad_probability(xp):
    if not eager(xp):
        pytest.skip("value checks are skipped for lazy arrays (documented)")
    with pytest.raises(ValueError, match=r"^p has a negative entry \(-0.5\) at index 1"):
        kldiv.entropy(asarray(xp, [1.5, -0.5], "float64"))


@pytest.mark.parametrize("func", PAIR_FUNCS)
def test_row_off_one_names_argument_and_row(xp, func):
    if not eager(xp):
        pytest.skip("value checks are skipped for lazy arrays (documented)")
    p_np = np.array(P + P)
    p_np[2] *= 1.01
    p, q = asarray(xp, p_np, "float32"), asarray(xp, Q + Q, "float32")
    with pytest.raises(
        ValueError,
        match=r"^p is not normalised along axis -1: the row at index 2 sums to 1.0099999",
    ):
        func(p, q)
    with pytest.raises(ValueError, match=r"^q is not normalised"):
        func(q, p)
    func(p, q, validate=False)


def test_row_sum_tolerance_accepts_rows_normalised_in_float32(xp):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(50, 100_000)).astype(np.float32)
    p_np = x / x.sum(axis=-1, keepdims=True)
    p = asarray(xp, p_np, "float32")
    kldiv.entropy(p)


def test_row_off_one_for_tuple_axis(xp):
    if not eager(xp):
        pytest.skip("value checks are skipped for lazy arrays (documented)")
    p_np = np.full((2, 3, 4), 1 / 8)
    p_np[0, 1, 3] = 0.5
    p = asarray(xp, p_np, "float64")
    with pytest.raises(ValueError, match=r"along axis \(-3, -1\): the row at index 1 sums"):
        kldiv.entropy(p, axis=(0, 2))


def test_lazy_arrays_skip_value_checks_but_never_give_a_number_for_negative_input(xp):
    if eager(xp):
        pytest.skip("only lazy backends skip the value checks")
    p = asarray(xp, [[1.5, -0.5]], "float64")
    q = asarray(xp, [[0.5, 0.5]], "float64")
    assert np.isnan(to_numpy(kldiv.kl_div(p, q))).all()
    assert np.isnan(to_numpy(kldiv.rel_entr(p, q))[0, 1])


@pytest.mark.parametrize("func", [*PAIR_FUNCS, kldiv.rel_entr, kldiv.kl_div_logits])
def test_shapes_that_do_not_broadcast(xp, func):
    p = asarray(xp, np.full((2, 3), 1 / 3), "float64")
    q = asarray(xp, np.full((4, 3), 1 / 3), "float64")
    with pytest.raises(
        ValueError, match=r"of shape \(2, 3\) and .* of shape \(4, 3\) do not broadcast"
    ):
        func(p, q)


@pytest.mark.parametrize("func", [*PAIR_FUNCS, kldiv.kl_div_logits])
def test_distribution_axis_cannot_be_broadcast(xp, func):
    p = asarray(xp, np.full((2, 3), 1 / 3), "float64")
    q = asarray(xp, np.ones((2, 1)), "float64")
    with pytest.raises(ValueError, match=r"has size 1 along axis -1 .* cannot be broadcast"):
        func(p, q)


@pytest.mark.parametrize("axis", [2, -3, (0, 5)])
def test_axis_out_of_range(xp, axis):
    p = asarray(xp, P, "float64")
    with pytest.raises(np.exceptions.AxisError, match="out of bounds for array of dimension 2"):
        kldiv.kl_div(p, p, axis=axis)
    with pytest.raises(IndexError):
        kldiv.entropy(p, axis=axis)


@pytest.mark.parametrize(
    ("axis", "error"), [(1.5, TypeError), ((1, 1), ValueError), ((), ValueError)]
)
def test_bad_axis_values(xp, axis, error):
    p = asarray(xp, P, "float64")
    with pytest.raises(error, match="axis"):
        kldiv.kl_div(p, p, axis=axis)


@pytest.mark.parametrize("base", [0, -2, 1, float("nan"), float("inf")])
def test_bad_base(xp, base):
    p = asarray(xp, P, "float64")
    with pytest.raises(ValueError, match=r"^base must be finite, positive and not 1"):
        kldiv.kl_div(p, p, base=base)


def test_base_of_wrong_type():
    with pytest.raises(TypeError, match=r"^base must be a number"):
        kldiv.entropy(np.array([1.0]), base="two")


def test_arrays_of_two_libraries():
    torch = pytest.importorskip("torch")
    p = np.array(P)
    q = torch.tensor(Q, dtype=torch.float64)
    expected = r"^arrays of one library expected, but p is a numpy\.ndarray, q is a torch\.Tensor"
    with pytest.raises(TypeError, match=expected):
        kldiv.kl_div(p, q)


def test_a_non_numeric_argument():
    with pytest.raises(TypeError, match=r"^q must be an array or a sequence of numbers"):
        kldiv.kl_div(np.array(P), object())


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_bad_logits(xp, bad):
    if not eager(xp):
        pytest.skip("value checks are skipped for lazy arrays (documented)")
    a_np = np.zeros((2, 3))
    a_np[1, 1] = bad
    a, b = asarray(xp, a_np, "float64"), asarray(xp, np.zeros((2, 3)), "float64")
    with pytest.raises(
        ValueError,
        match=r"^b has an? .* entry \(.*\) at index \(1, 1\); logits must be finite or -inf",
    ):
        kldiv.kl_div_logits(b, a)


def test_logit_row_with_no_finite_entry(xp):
    if not eager(xp):
        pytest.skip("value checks are skipped for lazy arrays (documented)")
    a_np = np.zeros((2, 3))
    a_np[1] = -np.inf
    a, b = asarray(xp, a_np, "float64"), asarray(xp, np.zeros((2, 3)), "float64")
    with pytest.raises(ValueError, match=r"^a: the row at index 1 has no finite logit"):
        kldiv.kl_div_logits(a, b)


def _calls(xp):
    rng = np.random.default_rng(7)
    p_np = rng.uniform(0.1, 1, (3, 5))
    p_np /= p_np.sum(-1, keepdims=True)
    q_np = rng.uniform(0.1, 1, (3, 5))
    q_np /= q_np.sum(-1, keepdims=True)
    p, q = asarray(xp, p_np, "float64"), asarray(xp, q_np, "float64")
    return (
        p,
        q,
        [
            lambda: kldiv.kl_div(p, q),
            lambda: kldiv.rel_entr(p, q),
            lambda: kldiv.kl_div_logits(p, q),
            lambda: kldiv.entropy(p),
            lambda: kldiv.cross_entropy(p, q),
            lambda: kldiv.js_div(p, q, base=2),
        ],
    )


def test_inputs_are_never_modified(xp):
    p, q, calls = _calls(xp)
    before_p, before_q = to_numpy(p).copy(), to_numpy(q).copy()
    for call in calls:
        to_numpy(call())
        np.testing.assert_array_equal(to_numpy(p), before_p)
        np.testing.assert_array_equal(to_numpy(q), before_q)


@pytest.mark.parametrize("func", [*PAIR_FUNCS, kldiv.kl_div_logits, kldiv.entropy])
def test_an_empty_distribution_axis_is_a_value_error(xp, func):
    p = asarray(xp, np.empty((3, 0)), "float64")
    args = (p,) if func is kldiv.entropy else (p, p)
    for validate in (True, False):
        with pytest.raises(ValueError, match=r"axis -1 of shape \(3, 0\) has no entries"):
            func(*args, validate=validate)


def test_empty_batches_and_empty_rel_entr_give_empty_results(xp):
    empty_batch = asarray(xp, np.empty((0, 4)), "float64")
    for func in PAIR_FUNCS:
        assert tuple(func(empty_batch, empty_batch).shape) == (0,)
    assert tuple(kldiv.entropy(empty_batch).shape) == (0,)
    empty = asarray(xp, np.empty((3, 0)), "float64")
    assert tuple(kldiv.rel_entr(empty, empty).shape) == (3, 0)


def test_a_long_float16_row_never_normalised_is_refused(xp):
    if not eager(xp):
        pytest.skip("value checks are skipped for lazy arrays (documented)")
    p = asarray(xp, np.full(10_000, 1.3 / 10_000), "float16")
    with pytest.raises(ValueError, match=r"^p is not normalised along axis -1: it sums to 1.30"):
        kldiv.entropy(p)
    x = np.random.default_rng(0).uniform(size=(4, 10_000)).astype(np.float16)
    kldiv.entropy(asarray(xp, x / x.sum(axis=-1, keepdims=True), "float16"))  # normalised: fine


def test_axis_none_takes_the_whole_array_as_one_distribution(xp):
    p_np = np.array([[0.2, 0.8], [0.5, 0.5]]) / 2
    q_np = np.array([[0.5, 0.5], [0.2, 0.8]]) / 2
    p, q = asarray(xp, p_np, "float64"), asarray(xp, q_np, "float64")
    got = to_numpy(kldiv.kl_div(p, q, axis=None))
    assert got.shape == ()
    np.testing.assert_allclose(got, scipy.stats.entropy(p_np.ravel(), q_np.ravel()), rtol=1e-14)
    assert to_numpy(kldiv.entropy(p, axis=None, keepdims=True)).shape == (1, 1)
    with pytest.raises(ValueError, match="a 0-d array has no axis"):
        kldiv.entropy(asarray(xp, 1.0, "float64"), axis=None)


def test_a_bad_base_fails_before_any_work_on_the_arrays():
    unnormalised = np.array([0.5, 0.6])
    with pytest.raises(ValueError, match=r"^base must be finite"):
        kldiv.kl_div(unnormalised, unnormalised, base=0)
