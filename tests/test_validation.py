"""Bad input gets a clear error naming the argument, on every backend; input is never changed."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
import scipy.stats

import kldiv
from tests._helpers import asarray, to_numpy
from tests._references import PAIRS

P = [[0.25, 0.1, 0.65], [0.8, 0.15, 0.05]]
Q = [[0.7, 0.2, 0.1], [0.15, 0.8, 0.05]]
# every reduction of two distributions in kldiv's table
PAIR_FUNCS = [getattr(kldiv, name) for name in PAIRS]


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


# Lazy and unreadable arrays: what a check would refuse gives NaN, in the lazy computation.

ALL_FUNCS = [*PAIR_FUNCS, kldiv.entropy]


def _call(func, p, q):
    return func(p) if func is kldiv.entropy else func(p, q)


@pytest.mark.parametrize("func", ALL_FUNCS)
@pytest.mark.parametrize(
    "row",
    [
        pytest.param([0.5, 0.6], id="off-1"),
        pytest.param([3.0, 1.0], id="counts"),
        pytest.param([1.5, -0.5], id="negative"),
        pytest.param([np.nan, 1.0], id="nan"),
        pytest.param([np.inf, 0.0], id="inf"),
    ],
)
def test_what_a_check_refuses_is_nan_on_lazy_arrays(xp, func, row):
    """Dask always; elsewhere eager arrays raise, which the other tests check."""
    if eager(xp):
        pytest.skip("eager arrays raise instead")
    p = asarray(xp, [row, [0.5, 0.5]], "float64")
    q = asarray(xp, [[0.5, 0.5], [0.25, 0.75]], "float64")
    got = to_numpy(_call(func, p, q))
    assert np.isnan(got[0]), got
    assert np.isfinite(got[1]), got  # the good row keeps its number


@pytest.mark.parametrize("func", ALL_FUNCS)
@pytest.mark.parametrize("row", [[0.5, 0.6], [3.0, 1.0], [1.5, -0.5], [np.inf, 0.0]])
def test_what_a_check_refuses_is_nan_under_jax_jit(func, row):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    p = jnp.asarray([row, [0.5, 0.5]])
    q = jnp.asarray([[0.5, 0.5], [0.25, 0.75]])
    got = np.asarray(jax.jit(lambda p, q: _call(func, p, q))(p, q))
    assert np.isnan(got[0]), got
    assert np.isfinite(got[1]), got
    with pytest.raises(ValueError, match=r"^p (is not normalised|has an? )"):
        _call(func, p, q)  # concrete JAX arrays are checked


def test_lazy_nan_keeps_keepdims_tuple_axes_and_broadcasting():
    da = pytest.importorskip("dask.array")
    p_np = np.full((2, 3, 4), 1 / 12)
    p_np[1, 0, 0] = 0.5
    q_np = np.full((3, 4), 1 / 12)
    p, q = da.from_array(p_np, chunks=(1, 3, 2)), da.from_array(q_np)
    got = kldiv.kl_div(p, q, axis=(1, 2), keepdims=True).compute()
    assert got.shape == (2, 1, 1)
    assert got[0, 0, 0] == 0
    assert np.isnan(got[1, 0, 0])
    got = kldiv.kl_div(q, p, axis=(-2, -1)).compute()  # now the second argument is off 1
    assert got.shape == (2,)
    assert got[0] == 0
    assert np.isnan(got[1])


def test_lazy_checks_are_not_computed_before_the_result_is():
    da = pytest.importorskip("dask.array")
    calls = []

    def block(x):
        calls.append(1)
        return x

    p = da.from_array(np.array([[0.5, 0.6]]), chunks=1).map_blocks(block)
    calls.clear()  # map_blocks calls block once on an empty array to learn its output type
    result = kldiv.kl_div(p, p)
    assert not calls  # building the result computed nothing
    assert np.isnan(result.compute()).all()


# The tolerance table (docs/index.md, "Validation").


@pytest.mark.parametrize("n", [2, 10, 1000, 32_000])
def test_bfloat16_rows_normalised_in_bfloat16_pass(n):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(n)
    logits = 3 * torch.randn(64, n, generator=gen)
    for p in (
        torch.softmax(logits.to(torch.bfloat16), dim=-1),
        torch.softmax(logits, dim=-1).to(torch.bfloat16),
    ):
        u = torch.rand(64, n, generator=gen).to(torch.bfloat16)
        for rows in (p, u / u.sum(dim=-1, keepdim=True)):
            assert torch.isfinite(kldiv.entropy(rows)).all()
            assert torch.isfinite(kldiv.kl_div(rows, rows)).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_rows_visibly_unnormalised_fail(dtype):
    torch = pytest.importorskip("torch")
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(8, 100, generator=gen)
    for bad in (
        scores.to(dt),  # a forgotten softmax
        torch.softmax(scores, -1).to(dt) * 1.1,
        torch.randint(0, 5, (8, 100), generator=gen).to(dt),  # counts
    ):
        with pytest.raises(ValueError, match=r"^p is not normalised|^p has a negative"):
            kldiv.entropy(bad)


@pytest.mark.parametrize("n", [3, 1000, 100_000])
def test_rows_normalised_in_float32_then_cast_up_pass(xp, n):
    if not eager(xp):
        pytest.skip("value checks are skipped for lazy arrays (documented)")
    x = np.random.default_rng(n).uniform(size=(4, n)).astype(np.float32)
    p32 = x / x.sum(axis=-1, keepdims=True)
    p = asarray(xp, p32.astype(np.float64), "float64")
    kldiv.kl_div(p, p)
    kldiv.entropy(p)
    with pytest.raises(ValueError, match="is not normalised"):
        kldiv.entropy(asarray(xp, p32.astype(np.float64) * 1.001, "float64"))


def test_longdouble_rows_normalised_in_longdouble_pass():
    x = np.random.default_rng(0).uniform(size=(4, 1000)).astype(np.longdouble)
    p = x / x.sum(axis=-1, keepdims=True)
    assert np.isfinite(kldiv.entropy(p)).all()
    with pytest.raises(ValueError, match="is not normalised"):
        kldiv.entropy(p * np.longdouble(1.01))


def test_tolerance_table():
    from kldiv import _validation

    xp = array_api_compat.array_namespace(np.empty(0))
    eps32 = float(np.finfo(np.float32).eps)
    assert _validation.sum_tolerance(np.float16, 10**6, xp) == 4 * float(np.finfo(np.float16).eps)
    for dtype in (np.float32, np.float64, np.longdouble):
        assert _validation.sum_tolerance(dtype, 100, xp) == pytest.approx(eps32 * 48)


# Inputs that would otherwise be a wrong number or an error far from the cause.


@pytest.mark.parametrize("func", [*PAIR_FUNCS, kldiv.rel_entr])
@pytest.mark.parametrize("validate", [True, False])
def test_none_or_a_string_is_a_type_error_naming_the_argument(xp, func, validate):
    q = asarray(xp, [0.5, 0.5], "float64")
    with pytest.raises(
        TypeError, match=r"^p must be an array or a sequence of numbers, not .*None"
    ):
        func(None, q, validate=validate)
    with pytest.raises(TypeError, match=r"^q must be an array .* not builtins\.str"):
        func(q, "0.5", validate=validate)


@pytest.mark.parametrize("func", [*PAIR_FUNCS, kldiv.rel_entr])
def test_masked_arrays_are_refused_with_what_to_do(func):
    p = np.ma.masked_array([0.25, 0.1, 0.65], mask=[0, 0, 1])
    q = np.full(3, 1 / 3)
    with pytest.raises(TypeError, match=r"^p is a NumPy masked array.*p\.filled\(0\)"):
        func(p, q)
    with pytest.raises(TypeError, match=r"^q is a NumPy masked array"):
        func(q, np.ma.masked_array([np.nan, 0.5, 0.5], mask=[1, 0, 0]), validate=False)


def test_dask_arrays_of_unknown_chunk_sizes_say_so():
    da = pytest.importorskip("dask.array")
    x = da.from_array(np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]]), chunks=1)
    kept = x[x[:, 0] > 0.3]
    q = da.from_array(np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"^p has unknown sizes .*compute_chunk_sizes\(\)"):
        kldiv.kl_div(kept, q)
    kept.compute_chunk_sizes()
    np.testing.assert_allclose(
        kldiv.kl_div(kept, q).compute(),
        kldiv.kl_div(np.array([[0.5, 0.5], [0.9, 0.1]]), [0.5, 0.5]),
    )
