"""KLDivergence: PuzzleLib's behaviour, on every backend, with better numerics."""

from __future__ import annotations

import gc
import math
import tracemalloc
import weakref

import array_api_compat
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kldiv
from kldiv import KLDivergence, KLDivergenceError, softmax_kl_loss
from kldiv._backends import numpy as nb
from tests._helpers import asarray, assert_result, dtype_of, to_numpy


def softmax_rows(x: np.ndarray) -> np.ndarray:
    """Softmax of each sample over all its non-batch axes, in float64 (the host reference)."""
    rows = x.reshape(x.shape[0], -1).astype(np.float64)
    e = np.exp(rows - rows.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).reshape(x.shape)


def reference(pred: np.ndarray, target: np.ndarray, norm_target: bool) -> tuple[float, np.ndarray]:
    """PuzzleLib's formulas on the host: error = sum(y log(y/s)) / N, grad = (y - s) / N."""
    n = pred.shape[0]
    s = softmax_rows(pred)
    y = softmax_rows(target) if norm_target else target.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(y > 0, y * (np.log(y) - np.log(s)), 0.0)
    return float(terms.sum() / n), (y - s) / n


def eager(xp) -> bool:
    return not array_api_compat.is_dask_namespace(xp)


def test_puzzlelib_unit_test(xp):
    """PuzzleLib's own test: random (10, 10) float32 pred and target, normTarget=True."""
    rng = np.random.default_rng(10)
    pred_np = rng.standard_normal((10, 10)).astype(np.float32)
    target_np = rng.standard_normal((10, 10)).astype(np.float32)
    pred, target = asarray(xp, pred_np, "float32"), asarray(xp, target_np, "float32")
    div = KLDivergence(normTarget=True)
    error, grad = div(pred, target)
    host_error, host_grad = reference(pred_np, target_np, norm_target=True)
    assert isinstance(error, float)
    assert np.isclose(host_error, error)
    got = assert_result(grad, pred, dtype=xp.float32, shape=(10, 10))
    assert np.allclose(host_grad, got)
    np.testing.assert_allclose(
        got, (softmax_rows(target_np) - softmax_rows(pred_np)) / 10, rtol=1e-5, atol=1e-7
    )
    val = KLDivergence(normTarget=True).validate(pred, target)
    assert isinstance(val, float)
    assert np.isclose(host_error, val)


def test_documentation_example_with_numpy_arrays():
    """The Russian documentation page's example, NumPy arrays in place of gpuarray."""
    scores = np.random.randn(10, 10).astype(np.float32)  # noqa: NPY002 (as the page has it)
    labels = np.random.randn(10, 10).astype(np.float32)  # noqa: NPY002
    div = KLDivergence(normTarget=True)
    error, grad = div(scores, labels)
    host_error, host_grad = reference(scores, labels, norm_target=True)
    assert error == pytest.approx(host_error, rel=1e-6)
    assert isinstance(grad, np.ndarray)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(grad, host_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("norm_target", [False, True])
def test_error_and_grad_match_the_host_reference(xp, dtype, norm_target):
    dt = dtype_of(xp, dtype)
    rng = np.random.default_rng(11)
    pred_np = (2 * rng.standard_normal((6, 9))).astype(dtype)
    target_np = (
        rng.standard_normal((6, 9)) if norm_target else softmax_rows(rng.standard_normal((6, 9)))
    )
    target_np = target_np.astype(dtype)
    if not norm_target:
        target_np[0, :3] = 0  # zero targets contribute nothing
        target_np = (target_np / target_np.astype(np.float64).sum(1, keepdims=True)).astype(dtype)
    pred, target = asarray(xp, pred_np, dtype), asarray(xp, target_np, dtype)
    error, grad = KLDivergence(normTarget=norm_target)(pred, target)
    host_error, host_grad = reference(pred_np, target_np, norm_target)
    tol = {"float16": 1e-3, "float32": 1e-6, "float64": 1e-12}[dtype]
    assert error == pytest.approx(host_error, rel=tol)
    got = assert_result(grad, pred, dtype=dt, shape=(6, 9))
    np.testing.assert_allclose(got, host_grad, rtol=tol * 10, atol=tol / 10)


def test_grad_is_minus_the_finite_difference_gradient(xp):
    rng = np.random.default_rng(12)
    pred_np = rng.standard_normal((3, 5))
    target_np = softmax_rows(rng.standard_normal((3, 5)))
    target = asarray(xp, target_np, "float64")
    div = KLDivergence()
    _, grad = div(asarray(xp, pred_np, "float64"), target)
    grad_np = to_numpy(grad)
    h = 1e-6
    numeric = np.zeros_like(pred_np)
    for index in np.ndindex(*pred_np.shape):
        up, down = pred_np.copy(), pred_np.copy()
        up[index] += h
        down[index] -= h
        e_up = div.validate(asarray(xp, up, "float64"), target)
        e_down = div.validate(asarray(xp, down, "float64"), target)
        numeric[index] = (e_up - e_down) / (2 * h)
    np.testing.assert_allclose(grad_np, -numeric, rtol=1e-6, atol=1e-9)


def test_accumulation_over_batches_of_different_sizes(xp):
    rng = np.random.default_rng(13)
    div = KLDivergence(normTarget=True)
    sums, samples = 0.0, 0
    for n in (4, 7, 1, 5):
        pred_np = rng.standard_normal((n, 6))
        target_np = rng.standard_normal((n, 6))
        error, _ = div(asarray(xp, pred_np, "float64"), asarray(xp, target_np, "float64"))
        host_error, _ = reference(pred_np, target_np, norm_target=True)
        assert error == pytest.approx(host_error, rel=1e-12)
        assert div.getError() == error
        sums += host_error * n
        samples += n
        assert div.getMeanError() == pytest.approx(sums / samples, rel=1e-12)
    assert div.numOfSamples == 17
    grad = div(
        asarray(xp, rng.standard_normal((2, 6)), "float64"),
        asarray(xp, rng.standard_normal((2, 6)), "float64"),
        queryError=False,
    )
    assert tuple(grad.shape) == (2, 6)
    assert div.numOfSamples == 19
    assert div.batchsize == 2
    div.resetAccumulator()
    with pytest.raises(RuntimeError, match="no sample"):
        div.getMeanError()
    pred_np = rng.standard_normal((3, 6))
    target_np = rng.standard_normal((3, 6))
    error, _ = div(asarray(xp, pred_np, "float64"), asarray(xp, target_np, "float64"))
    assert div.getMeanError() == pytest.approx(error, rel=1e-12)


def test_validate_does_not_accumulate(xp):
    rng = np.random.default_rng(14)
    pred = asarray(xp, rng.standard_normal((4, 3)), "float64")
    target = asarray(xp, rng.standard_normal((4, 3)), "float64")
    div = KLDivergence(normTarget=True)
    error, _ = div(pred, target)
    val = div.validate(pred, target)
    assert val == pytest.approx(error, rel=1e-14)
    assert div.getValError() == val
    assert div.numOfSamples == 4
    assert div.getMeanError() == pytest.approx(error, rel=1e-14)


def test_four_dimensional_pred_is_softmaxed_over_c_h_w_jointly(xp):
    rng = np.random.default_rng(15)
    pred_np = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    target_np = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    pred, target = asarray(xp, pred_np, "float32"), asarray(xp, target_np, "float32")
    error, grad = KLDivergence(normTarget=True)(pred, target)
    host_error, host_grad = reference(pred_np, target_np, norm_target=True)
    assert error == pytest.approx(host_error, rel=1e-6)
    got = assert_result(grad, pred, dtype=xp.float32, shape=(2, 3, 4, 5))
    np.testing.assert_allclose(got, host_grad, rtol=1e-5, atol=1e-8)
    # Jointly: each sample's grad sums to 0 over C*H*W, not over C alone.
    assert np.allclose(got.reshape(2, -1).astype(np.float64).sum(1), 0, atol=1e-6)
    assert not np.allclose(got.sum(1), 0, atol=1e-4)


def test_large_logit_gaps_stay_finite_where_log_of_softmax_is_inf(xp):
    pred_np = np.array([[0.0, 200.0, -200.0], [300.0, 0.0, 0.0]], dtype=np.float32)
    target_np = np.array([[0.5, 0.25, 0.25], [0.0, 0.5, 0.5]], dtype=np.float32)
    s = softmax_rows(pred_np).astype(np.float32)
    with np.errstate(divide="ignore"):
        assert np.isinf(np.log(s)).any()  # PuzzleLib's log(softmax) in float32
    pred, target = asarray(xp, pred_np, "float32"), asarray(xp, target_np, "float32")
    error, grad = KLDivergence()(pred, target)
    # Exact: sum y*(log y - log s) with log s = pred - logsumexp(pred), done by hand.
    ls0 = pred_np[0].astype(np.float64) - 200.0 - math.log1p(math.exp(-200) + math.exp(-400))
    ls1 = pred_np[1].astype(np.float64) - 300.0 - math.log1p(2 * math.exp(-300))
    y = target_np.astype(np.float64)
    exact = (
        np.sum(y[0] * (np.log(y[0]) - ls0)) + np.sum(y[1, 1:] * (np.log(y[1, 1:]) - ls1[1:]))
    ) / 2
    assert math.isfinite(error)
    assert error == pytest.approx(exact, rel=1e-6)
    assert np.isfinite(to_numpy(grad)).all()


def test_zero_target_gives_zero_error_where_prediction_matches(xp):
    pred = asarray(xp, [[0.0, -np.inf, 0.0]], "float64")
    target = asarray(xp, [[0.5, 0.0, 0.5]], "float64")
    error, grad = KLDivergence()(pred, target)
    assert error == 0.0
    np.testing.assert_array_equal(to_numpy(grad), 0.0)


@pytest.mark.parametrize("shape", [(5,), (5, 1)])
def test_integer_labels_are_one_hot(xp, shape):
    rng = np.random.default_rng(16)
    pred_np = rng.standard_normal((5, 4))
    labels_np = np.array([0, 3, 1, 1, 2]).reshape(shape[:1])
    pred = asarray(xp, pred_np, "float64")
    labels = xp.asarray(labels_np)
    error, grad = KLDivergence(maxlabels=4)(pred, labels)
    host_error, host_grad = reference(pred_np, np.eye(4)[labels_np], norm_target=False)
    assert error == pytest.approx(host_error, rel=1e-12)
    np.testing.assert_allclose(to_numpy(grad), host_grad, rtol=1e-12, atol=1e-15)


def test_integer_labels_for_spatial_pred(xp):
    rng = np.random.default_rng(17)
    pred_np = rng.standard_normal((2, 3, 2, 2))
    labels_np = rng.integers(0, 3, (2, 2, 2))
    target_np = np.moveaxis(np.eye(3)[labels_np], -1, 1) / 4  # one-hot over C, per position
    error, grad = KLDivergence()(asarray(xp, pred_np, "float64"), xp.asarray(labels_np))
    host_error, host_grad = reference(pred_np, target_np, norm_target=False)
    assert error == pytest.approx(host_error, rel=1e-12)
    np.testing.assert_allclose(to_numpy(grad), host_grad, rtol=1e-12, atol=1e-15)


# ---- bad input ------------------------------------------------------------------------------


def test_maxlabels_mismatch_is_a_value_error(xp):
    pred = asarray(xp, np.zeros((2, 5)), "float32")
    with pytest.raises(
        ValueError, match=r"pred has 5 classes .*\(shape \(2, 5\)\), but maxlabels=4"
    ):
        KLDivergence(maxlabels=4)(pred, pred)


@pytest.mark.parametrize(("label", "where"), [(-1, 2), (4, 1)])
def test_label_out_of_range_names_the_value(xp, label, where):
    if not eager(xp):
        pytest.skip("value checks are skipped for lazy arrays (documented)")
    labels_np = np.array([0, 1, 2])
    labels_np[where] = label
    pred = asarray(xp, np.zeros((3, 4)), "float32")
    with pytest.raises(
        ValueError, match=rf"target holds label {label} at index {where}, outside \[0, 4\)"
    ):
        KLDivergence(maxlabels=4)(pred, xp.asarray(labels_np))
    with pytest.raises(
        ValueError, match=rf"label {label} at index {where}, outside \[0, 4\) \(4 classes\)"
    ):
        KLDivergence()(pred, xp.asarray(labels_np))


@pytest.mark.parametrize(
    ("pred_shape", "target_shape"),
    [((2, 5), (3, 5)), ((2, 5), (2, 4)), ((2, 3, 4), (2, 3, 5)), ((2, 5), (2, 5, 1))],
)
def test_shape_mismatch_shows_both_shapes(xp, pred_shape, target_shape):
    pred = asarray(xp, np.zeros(pred_shape), "float32")
    target = asarray(xp, np.full(target_shape, 0.2), "float32")
    with pytest.raises(
        ValueError, match=rf"pred has {re_shape(pred_shape)} and target {re_shape(target_shape)}"
    ):
        KLDivergence()(pred, target)


def re_shape(shape: tuple[int, ...]) -> str:
    return str(shape).replace("(", r"\(").replace(")", r"\)")


def test_label_shape_mismatch(xp):
    pred = asarray(xp, np.zeros((2, 5)), "float32")
    with pytest.raises(ValueError, match=r"class labels\) must have shape \(2,\)"):
        KLDivergence()(pred, xp.asarray(np.array([0, 1, 2])))


def test_pred_without_class_axis(xp):
    pred = asarray(xp, np.zeros(5), "float32")
    with pytest.raises(ValueError, match=r"pred must have a batch axis and a class axis"):
        KLDivergence()(pred, pred)


def test_bad_dtypes(xp):
    pred = asarray(xp, np.zeros((2, 3)), "float32")
    with pytest.raises(TypeError, match=r"^pred must have a real floating dtype"):
        KLDivergence()(xp.asarray(np.zeros((2, 3), dtype=np.int64)), pred)
    with pytest.raises(
        TypeError, match=r"^target must hold real floating scores or integer labels"
    ):
        KLDivergence()(pred, xp.asarray(np.zeros((2, 3), dtype=bool)))


def test_bad_values(xp):
    if not eager(xp):
        pytest.skip("value checks are skipped for lazy arrays (documented)")
    pred = asarray(xp, np.zeros((2, 3)), "float64")
    target = asarray(xp, [[0.5, 0.5, 0.0], [0.2, 0.9, -0.1]], "float64")
    with pytest.raises(
        ValueError, match=r"^target has a negative entry \(-0.1\) at index \(1, 2\)"
    ):
        KLDivergence()(pred, target)
    unnormalised = asarray(xp, [[0.5, 0.5, 0.0], [0.2, 0.2, 0.2]], "float64")
    with pytest.raises(
        ValueError, match=r"^target is not normalised along axis -1: the row at index 1"
    ):
        KLDivergence()(pred, unnormalised)
    error, _ = KLDivergence(validate=False)(pred, unnormalised)
    assert math.isfinite(error)
    nan_pred = asarray(xp, [[0.0, np.nan, 0.0], [0.0, 0.0, 0.0]], "float64")
    with pytest.raises(ValueError, match=r"^pred has a NaN entry \(nan\) at index \(0, 1\)"):
        KLDivergence(normTarget=True)(nan_pred, pred)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="maxlabels must be a positive int"):
        KLDivergence(maxlabels=0)
    # A bool is no class count: a TypeError since the issue, as for every non-int.
    with pytest.raises(TypeError, match="maxlabels must be a positive int"):
        KLDivergence(maxlabels=True)


def test_norm_target_with_labels_is_refused(xp):
    pred = asarray(xp, np.zeros((2, 3)), "float32")
    with pytest.raises(ValueError, match="normTarget=True takes raw scores"):
        KLDivergence(normTarget=True)(pred, xp.asarray(np.array([0, 1])))


def test_getError_before_any_batch():
    with pytest.raises(RuntimeError, match="no batch"):
        KLDivergence().getError()


def test_inputs_are_never_modified(xp):
    rng = np.random.default_rng(18)
    pred_np = rng.standard_normal((4, 6))
    target_np = rng.standard_normal((4, 6))
    pred, target = asarray(xp, pred_np, "float64"), asarray(xp, target_np, "float64")
    div = KLDivergence(normTarget=True)
    div(pred, target)
    div.validate(pred, target)
    np.testing.assert_array_equal(to_numpy(pred), pred_np)
    np.testing.assert_array_equal(to_numpy(target), target_np)


@pytest.mark.parametrize("shape", [(0, 5), (3, 0)])
def test_empty_pred_is_a_value_error(xp, shape):
    pred = asarray(xp, np.zeros(shape), "float32")
    with pytest.raises(ValueError, match=r"pred of shape .* is empty"):
        KLDivergence()(pred, pred)


def test_getError_answers_after_a_reset_even_unread(xp):
    rng = np.random.default_rng(19)
    pred = asarray(xp, rng.standard_normal((4, 3)), "float64")
    target = asarray(xp, rng.standard_normal((4, 3)), "float64")
    div = KLDivergence(normTarget=True)
    div(pred, target, queryError=False)
    div.resetAccumulator()
    assert div.getError() == pytest.approx(div.validate(pred, target), rel=1e-14)


def test_labels_of_shape_n_for_spatial_pred_are_refused(xp):
    pred = asarray(xp, np.zeros((2, 3, 2, 2)), "float32")
    with pytest.raises(ValueError, match=r"must have shape \(2, 2, 2\), pred's without its class"):
        KLDivergence()(pred, xp.asarray(np.array([0, 2])))


def test_bad_pred_is_named_at_its_own_index(xp):
    if not eager(xp):
        pytest.skip("value checks are skipped for lazy arrays (documented)")
    pred_np = np.zeros((2, 3, 2, 2))
    pred_np[1, 2, 1, 0] = np.nan
    pred = asarray(xp, pred_np, "float64")
    target = asarray(xp, np.full((2, 3, 2, 2), 1 / 12), "float64")
    with pytest.raises(ValueError, match=r"^pred has a NaN entry \(nan\) at index \(1, 2, 1, 0\)"):
        KLDivergence()(pred, target)


def test_spatial_labels_with_float16_pred_are_exact(xp):
    rng = np.random.default_rng(20)
    pred_np = rng.standard_normal((2, 3, 3, 3))
    labels_np = rng.integers(0, 3, (2, 3, 3))
    target_np = np.moveaxis(np.eye(3)[labels_np], -1, 1) / 9  # 1/9 is not a float16
    pred16 = asarray(xp, pred_np, "float16")
    error, grad = KLDivergence()(pred16, xp.asarray(labels_np))
    host_error, _ = reference(to_numpy(pred16).astype(np.float64), target_np, norm_target=False)
    assert error == pytest.approx(host_error, rel=1e-6)
    assert grad.dtype == pred16.dtype


# ---- helpers for arrays whose values cannot be read ------------------------------------------


def is_jax(xp) -> bool:
    return xp.__name__.startswith("jax")


def is_torch(xp) -> bool:
    return array_api_compat.is_torch_namespace(xp)


def run_lazy(xp, fn, *arrays):
    """``fn(*arrays)`` where the values cannot be read: Dask as it is, JAX under ``jax.jit``,
    torch under ``torch.func.vmap`` (over a batch of one); results as NumPy."""
    if not eager(xp):
        return tuple(to_numpy(r) for r in fn(*arrays))
    if is_jax(xp):
        import jax

        return tuple(to_numpy(r) for r in jax.jit(fn)(*arrays))
    if is_torch(xp):
        import torch

        stacked = torch.func.vmap(fn)(*(a[None] for a in arrays))
        return tuple(to_numpy(r)[0] for r in stacked)
    pytest.skip(f"{xp.__name__} arrays can always be read")


# ---- item 5: labels that are not checked give NaN, never a number ----------------------------


def test_unchecked_label_out_of_range_is_nan_in_the_issues_example():
    error, grad = KLDivergence(maxlabels=3, validate=False)(np.zeros((2, 3)), np.array([0, 7]))
    assert math.isnan(error)
    assert np.isnan(grad[1]).all()
    np.testing.assert_allclose(grad[0], (np.eye(3)[0] - 1 / 3) / 2, rtol=1e-15)


@pytest.mark.parametrize("bad_label", [-1, 4, 100])
@pytest.mark.parametrize("spatial", [False, True])
def test_unchecked_labels_out_of_range_give_nan_rows(xp, bad_label, spatial):
    """validate=False on every library: the sample with the bad label gets NaN, the others
    their exact grad, and the error is NaN (not the 0.55 an all-zero one-hot row gives)."""
    rng = np.random.default_rng(30)
    shape = (3, 4, 2, 2) if spatial else (3, 4)
    pred_np = rng.standard_normal(shape)
    labels_np = rng.integers(0, 4, (3, *shape[2:]))
    good = labels_np.copy()
    labels_np.reshape(3, -1)[1, -1] = bad_label  # sample 1, its last position
    pred = asarray(xp, pred_np, "float64")
    div = KLDivergence(validate=False)
    error, grad = div(pred, xp.asarray(labels_np))
    assert math.isnan(error)
    assert math.isnan(div.getMeanError())
    got = to_numpy(grad)
    assert np.isnan(got[1]).all()
    _, host_grad = reference(pred_np, one_hot(good, 4), False)
    np.testing.assert_allclose(got[[0, 2]], host_grad[[0, 2]], rtol=1e-12, atol=1e-15)


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    """Labels ``(N, ...)`` as the loss's target ``(N, C, ...)``: one-hot along axis 1,
    divided by the number of positions."""
    hot = np.moveaxis(np.eye(classes)[labels], -1, 1)
    return hot / math.prod(labels.shape[1:])


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(-3, 7), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_unchecked_labels_nan_rows_are_exactly_the_bad_samples(labels, seed):
    classes = 4
    labels_np = np.array(labels)
    pred_np = np.random.default_rng(seed).standard_normal((len(labels), classes))
    error_sum, grad = softmax_kl_loss(pred_np, labels_np, validate=False)
    bad = (labels_np < 0) | (labels_np >= classes)
    assert np.isnan(float(error_sum)) == bad.any()
    np.testing.assert_array_equal(np.isnan(grad).all(axis=1), bad)
    assert np.isfinite(grad[~bad]).all()
    fixed = np.where(bad, 0, labels_np)
    _, host_grad = reference(pred_np, np.eye(classes)[fixed], False)
    np.testing.assert_allclose(grad[~bad], host_grad[~bad], rtol=1e-12, atol=1e-15)


# ---- item 6: what raises on readable arrays is NaN on lazy ones ------------------------------

_INF, _NAN = math.inf, math.nan

# (id, what to put in row 0, normTarget); pred and target are otherwise valid. Row 0 is the
# sample that must raise when readable and be NaN when not.
_REFUSED = [
    ("pred-nan", ("pred", [0.0, _NAN, 0.0, 0.0]), False),
    ("pred-inf", ("pred", [0.0, _INF, 0.0, 0.0]), False),
    ("pred-all-minus-inf", ("pred", [-_INF] * 4), False),
    ("target-negative", ("target", [0.5, 0.5, 0.5, -0.5]), False),
    ("target-nan", ("target", [_NAN, 0.5, 0.5, 0.0]), False),
    ("target-inf", ("target", [_INF, 0.5, 0.5, 0.0]), False),
    ("target-unnormalised", ("target", [0.2, 0.2, 0.2, 0.2]), False),
    ("norm-target-nan", ("target", [_NAN, 0.0, 0.0, 0.0]), True),
    ("norm-target-inf", ("target", [_INF, 0.0, 0.0, 0.0]), True),
    ("norm-target-all-minus-inf", ("target", [-_INF] * 4), True),
    ("label-out-of-range", ("labels", 4), False),
    ("label-negative", ("labels", -1), False),
]


def dtype_has(xp, name: str) -> bool:
    return name in str(xp.asarray(np.zeros(1, dtype=name)).dtype)


def refused_case(which: tuple[str, object], norm_target: bool):
    """(pred, target, valid target) as NumPy, with ``which`` in row 0 of three."""
    rng = np.random.default_rng(31)
    pred = rng.standard_normal((3, 4))
    what, value = which
    if what == "labels":
        target = np.array([value, 2, 1])
        return pred, target, np.eye(4)[[0, 2, 1]]
    target = (
        rng.standard_normal((3, 4)) if norm_target else softmax_rows(rng.standard_normal((3, 4)))
    )
    valid = target.copy()
    if what == "pred":
        pred[0] = value
    else:
        target[0] = value
    return pred, target, valid


@pytest.mark.parametrize(
    ("which", "norm_target"), [c[1:] for c in _REFUSED], ids=[c[0] for c in _REFUSED]
)
def test_refused_values_raise_on_readable_arrays(xp, which, norm_target):
    if not eager(xp):
        pytest.skip("Dask values cannot be read: see the lazy test")
    pred_np, target_np, _ = refused_case(which, norm_target)
    pred = asarray(xp, pred_np, "float64")
    target = xp.asarray(target_np) if which[0] == "labels" else asarray(xp, target_np, "float64")
    with pytest.raises(KLDivergenceError, match=r"^(pred|target)"):
        softmax_kl_loss(pred, target, norm_target=norm_target)
    with pytest.raises(AssertionError):  # what PuzzleLib code catches
        KLDivergence(normTarget=norm_target)(pred, target)


@pytest.mark.parametrize(
    ("which", "norm_target"), [c[1:] for c in _REFUSED], ids=[c[0] for c in _REFUSED]
)
def test_refused_values_are_nan_on_lazy_arrays(xp, which, norm_target):
    """Dask, JAX under jit, torch under vmap: the refused sample's grad row and the error sum
    are NaN, the other samples' grads exact; fused, so nothing is computed early."""
    pred_np, target_np, valid_np = refused_case(which, norm_target)
    labels = which[0] == "labels"
    pred = asarray(xp, pred_np, "float64" if dtype_has(xp, "float64") else "float32")
    dt = str(pred.dtype).rsplit(".", maxsplit=1)[-1]
    target = xp.asarray(target_np) if labels else asarray(xp, target_np, dt)

    def loss(p, t):
        return softmax_kl_loss(p, t, norm_target=norm_target)

    error_sum, grad = run_lazy(xp, loss, pred, target)
    assert np.isnan(error_sum)
    assert np.isnan(grad[0]).all()
    fixed_pred = np.where(np.isfinite(pred_np), pred_np, 0.0)
    _, host_grad = reference(fixed_pred, valid_np, norm_target)
    tol = 1e-12 if dt == "float64" else 1e-6
    np.testing.assert_allclose(grad[1:], host_grad[1:], rtol=tol, atol=tol / 10)
    if not eager(xp):  # the class on Dask: the same NaN, read as a float
        error, _ = KLDivergence(normTarget=norm_target)(pred, target)
        assert math.isnan(error)
    if labels or which[1] == [0.2, 0.2, 0.2, 0.2]:
        # validate=False is the formula, lazy or not: NaN only for a label out of range.
        def unchecked(p, t):
            return softmax_kl_loss(p, t, validate=False)

        error_sum, grad = run_lazy(xp, unchecked, pred, target)
        assert np.isnan(error_sum) == labels
        assert np.isnan(grad[0]).all() == labels


@pytest.mark.parametrize(
    ("which", "norm_target"), [c[1:] for c in _REFUSED], ids=[c[0] for c in _REFUSED]
)
def test_unchecked_eager_values_give_the_formula_except_labels(which, norm_target):
    """validate=False on NumPy: no raise, no mask; the formula's number, NaN only for a label
    out of range (item 5), and for what the formula itself makes NaN."""
    pred_np, target_np, _ = refused_case(which, norm_target)
    error_sum, grad = softmax_kl_loss(pred_np, target_np, norm_target=norm_target, validate=False)
    if which[0] == "labels":
        assert np.isnan(float(error_sum))
        assert np.isnan(grad[0]).all()
    if which == ("target", [0.2, 0.2, 0.2, 0.2]):  # the formula is finite there
        assert np.isfinite(float(error_sum))
        assert np.isfinite(grad).all()
    assert np.isfinite(grad[1:]).all()


_ROW_VALUES = st.sampled_from([0.0, 0.25, 0.5, 1.0, -0.25, 2.0, _NAN, _INF, -_INF])


@settings(max_examples=30, deadline=None)
@given(
    pred=st.lists(st.lists(_ROW_VALUES, min_size=3, max_size=3), min_size=1, max_size=4),
    target=st.lists(st.lists(_ROW_VALUES, min_size=3, max_size=3), min_size=4, max_size=4),
    norm_target=st.booleans(),
    normalise=st.booleans(),
)
def test_lazy_nan_rows_are_the_rows_eager_validation_refuses(pred, target, norm_target, normalise):
    """Property: on Dask, row i's grad is NaN exactly when the eager check refuses row i."""
    da = pytest.importorskip("dask.array")
    pred_np = np.array(pred)
    target_np = np.array(target[: len(pred)])
    if normalise and not norm_target:
        with np.errstate(all="ignore"):
            target_np = target_np / target_np.sum(axis=1, keepdims=True)
    refused = []
    for i in range(len(pred)):
        try:
            softmax_kl_loss(pred_np[i : i + 1], target_np[i : i + 1], norm_target=norm_target)
        except KLDivergenceError:
            refused.append(True)
        else:
            refused.append(False)
    error_sum, grad = softmax_kl_loss(
        da.from_array(pred_np), da.from_array(target_np), norm_target=norm_target
    )
    grad_np = grad.compute()
    np.testing.assert_array_equal(np.isnan(grad_np).all(axis=1), refused)
    assert np.isnan(float(error_sum.compute())) == any(refused)


# ---- item 12: a torch pred that requires grad ------------------------------------------------


def test_torch_pred_requiring_grad_gives_plain_results_and_keeps_no_graph():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(32)
    div = KLDivergence()
    preds = []
    for query in (True, True, False, True):
        pred = torch.randn(16, 10, generator=gen, requires_grad=True)
        target = torch.softmax(torch.randn(16, 10, generator=gen), dim=1)
        # No "Converting a tensor with requires_grad=True to a scalar" (warnings are errors).
        result = div(pred, target, queryError=query)
        grad = result[1] if query else result
        assert grad.grad_fn is None
        assert not grad.requires_grad
        assert div._batch_sum.grad_fn is None
        assert div._accum.grad_fn is None
        preds.append(weakref.ref(pred))
        del pred, result, grad
    assert isinstance(div.getMeanError(), float)
    assert isinstance(div.validate(torch.randn(2, 10, requires_grad=True), target[:2]), float)
    gc.collect()
    assert all(ref() is None for ref in preds), "the accumulator keeps a batch's graph"


def test_pure_function_follows_torch_autograd():
    """softmax_kl_loss does not detach: its error sum backpropagates to -N * grad."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(33)
    pred = torch.randn(4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    target = torch.softmax(torch.randn(4, 5, dtype=torch.float64, generator=gen), dim=1)
    error_sum, grad = softmax_kl_loss(pred, target)
    error_sum.backward()
    torch.testing.assert_close(pred.grad, -4 * grad.detach(), rtol=1e-12, atol=1e-14)


# ---- item 13: sequences, and maxlabels that is not an int -----------------------------------


def test_lists_are_accepted_like_the_functions_accept_them():
    error, grad = KLDivergence()([[0.0, 1.0]], [[0.5, 0.5]])
    host_error, host_grad = reference(np.array([[0.0, 1.0]]), np.array([[0.5, 0.5]]), False)
    assert error == pytest.approx(host_error, rel=1e-14)
    assert isinstance(grad, np.ndarray)
    np.testing.assert_allclose(grad, host_grad, rtol=1e-14)
    # A list of ints is labels, not a distribution.
    error, _ = KLDivergence(maxlabels=3)([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]], [0, 0])
    assert round(error, 6) == 0.549352


def test_a_list_target_takes_preds_library_and_dtype(xp):
    pred = asarray(xp, [[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]], "float32")
    error, grad = KLDivergence()(pred, [[0.25, 0.25, 0.5], [0.5, 0.25, 0.25]])
    assert_result(grad, pred, dtype=pred.dtype, shape=(2, 3))
    host_error, _ = reference(
        to_numpy(pred), np.array([[0.25, 0.25, 0.5], [0.5, 0.25, 0.25]]), False
    )
    assert error == pytest.approx(host_error, rel=1e-6)
    error, grad = KLDivergence(maxlabels=3)(pred, [2, 0])
    assert_result(grad, pred, dtype=pred.dtype, shape=(2, 3))
    host_error, _ = reference(to_numpy(pred), np.eye(3)[[2, 0]], False)
    assert error == pytest.approx(host_error, rel=1e-6)


@pytest.mark.parametrize("bad", [2.5, 3.0, np.float64(3.0), "abc", "3", True, np.True_, [3]])
def test_maxlabels_that_is_no_int_is_a_type_error(bad):
    with pytest.raises(TypeError, match=r"^maxlabels must be a positive int or None, not"):
        KLDivergence(maxlabels=bad)
    with pytest.raises(TypeError, match=r"^maxlabels must be"):
        softmax_kl_loss(np.zeros((1, 3)), np.array([0]), maxlabels=bad)


@pytest.mark.parametrize("count", [3, np.int64(3), np.uint8(3)])
def test_maxlabels_takes_integers(count):
    div = KLDivergence(maxlabels=count)
    assert div.maxlabels == 3
    assert type(div.maxlabels) is int
    assert repr(div) == "KLDivergence(maxlabels=3, normTarget=False)"


@pytest.mark.parametrize("count", [0, -1, np.int64(-3)])
def test_maxlabels_below_one_is_refused(count):
    with pytest.raises(KLDivergenceError, match=r"^maxlabels must be a positive int or None, not"):
        KLDivergence(maxlabels=count)


# ---- item 14: the pure function, and the class under tracing --------------------------------


def test_pure_function_is_public():
    assert kldiv.softmax_kl_loss is softmax_kl_loss
    assert kldiv.KLDivergenceError is KLDivergenceError
    assert {"softmax_kl_loss", "KLDivergenceError"} <= set(kldiv.__all__)


@pytest.mark.parametrize("norm_target", [False, True])
def test_pure_function_is_what_the_class_computes(xp, norm_target):
    rng = np.random.default_rng(34)
    pred_np = rng.standard_normal((5, 3, 2))
    target_np = rng.standard_normal((5, 3, 2))
    if not norm_target:
        target_np = softmax_rows(target_np)
    pred, target = asarray(xp, pred_np, "float32"), asarray(xp, target_np, "float32")
    error_sum, grad = softmax_kl_loss(pred, target, norm_target=norm_target)
    assert array_api_compat.array_namespace(error_sum) is array_api_compat.array_namespace(pred)
    assert tuple(error_sum.shape) == ()
    div = KLDivergence(normTarget=norm_target)
    error, class_grad = div(pred, target)
    assert float(to_numpy(error_sum)) / 5 == pytest.approx(error, rel=1e-12)
    got = assert_result(grad, pred, dtype=pred.dtype, shape=(5, 3, 2))
    np.testing.assert_array_equal(got, to_numpy(class_grad))


def test_class_refuses_jax_tracing_and_keeps_its_state():
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    pred = jnp.asarray([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    target = jnp.asarray([[0.25, 0.25, 0.5], [0.5, 0.25, 0.25]])
    div = KLDivergence()
    error, _ = div(pred, target)
    val = div.validate(pred, target)
    state = dict(vars(div))
    traced = {
        "jit": lambda: jax.jit(lambda p, t: div(p, t))(pred, target),
        "jit, target only": lambda: jax.jit(lambda t: div(pred, t))(target),
        "jit, queryError=False": lambda: jax.jit(lambda p, t: div(p, t, False))(pred, target),
        "vmap": lambda: jax.vmap(lambda p, t: div(p, t))(pred[None], target[None]),
        "grad": lambda: jax.grad(lambda p: div.validate(p, target))(pred),
        "jit validate": lambda: jax.jit(lambda p, t: div.validate(p, t))(pred, target),
    }
    for how, run in traced.items():
        with pytest.raises(TypeError, match=r"keeps state .* kldiv\.softmax_kl_loss") as info:
            run()
        assert "traced" in str(info.value), how
        assert vars(div) == state, how
    assert div.getError() == error
    assert div.getMeanError() == error
    assert div.getValError() == val


def test_class_refuses_torch_func_transforms():
    torch = pytest.importorskip("torch")
    pred = torch.zeros(1, 2, 3)
    div = KLDivergence()
    with pytest.raises(TypeError, match="keeps state"):
        torch.func.vmap(lambda p: div(p, torch.full((2, 3), 1 / 3)))(pred)
    assert div.numOfSamples == 0
    assert div._batch_sum is None


@pytest.mark.parametrize("kind", ["probabilities", "norm_target", "labels", "spatial-labels"])
def test_pure_function_under_jit_matches_eager(kind):
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    rng = np.random.default_rng(35)
    shape = (4, 3, 2, 2) if kind == "spatial-labels" else (4, 3)
    pred = jnp.asarray(rng.standard_normal(shape), dtype=jnp.float32)
    norm_target = kind == "norm_target"
    if kind.endswith("labels"):
        target = jnp.asarray(rng.integers(0, 3, (4, *shape[2:])))
    elif norm_target:
        target = jnp.asarray(rng.standard_normal(shape), dtype=jnp.float32)
    else:
        target = jnp.asarray(softmax_rows(rng.standard_normal(shape)), dtype=jnp.float32)

    def loss(p, t):
        return softmax_kl_loss(p, t, maxlabels=3, norm_target=norm_target)

    eager_error, eager_grad = loss(pred, target)
    jit_error, jit_grad = jax.jit(loss)(pred, target)
    assert float(jit_error) == pytest.approx(float(eager_error), rel=1e-6)
    np.testing.assert_allclose(np.asarray(jit_grad), np.asarray(eager_grad), rtol=1e-5, atol=1e-7)
    assert jit_grad.dtype == pred.dtype
    # jax.grad of the error sum is minus N times the grad: the downhill sign, not divided.
    autodiff = jax.grad(lambda p: loss(p, target)[0])(pred)
    np.testing.assert_allclose(
        np.asarray(autodiff), -4 * np.asarray(eager_grad), rtol=1e-4, atol=1e-6
    )


def test_pure_function_under_vmap_is_a_loop_over_batches():
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    rng = np.random.default_rng(36)
    preds = jnp.asarray(rng.standard_normal((3, 4, 5)), dtype=jnp.float32)
    targets = jnp.asarray(rng.standard_normal((3, 4, 5)), dtype=jnp.float32)
    errors, grads = jax.vmap(lambda p, t: softmax_kl_loss(p, t, norm_target=True))(preds, targets)
    assert errors.shape == (3,)
    assert grads.shape == (3, 4, 5)
    for b in range(3):
        error, grad = KLDivergence(normTarget=True)(preds[b], targets[b])
        assert float(errors[b]) / 4 == pytest.approx(error, rel=1e-5)
        np.testing.assert_allclose(np.asarray(grads[b]), np.asarray(grad), rtol=1e-5, atol=1e-7)
    # A bad label in one batch of a vmap makes only that batch's error NaN.
    labels = jnp.asarray([[0, 1, 2, 3], [0, 1, 9, 3], [4, 4, 4, 4]])
    errors, grads = jax.vmap(lambda p, t: softmax_kl_loss(p, t, maxlabels=5))(preds, labels)
    assert np.isnan(np.asarray(errors)).tolist() == [False, True, False]
    assert np.isnan(np.asarray(grads)).all(axis=2).tolist()[1] == [False, False, True, False]


# ---- item 15: no copy of the target ---------------------------------------------------------


class _StubBackend:
    """A backend that does no arithmetic, so that what the loss's own code allocates shows."""

    def __init__(self, grad: np.ndarray) -> None:
        self.grad = grad

    def softmax_kl_loss(self, pred, target, *, norm_target, xp):
        assert tuple(pred.shape) == tuple(target.shape) == self.grad.shape
        return np.asarray(0.0), self.grad

    def run(self, name, xp, *arrays, **options):
        assert name == "softmax_kl_loss"
        return self.softmax_kl_loss(*arrays, xp=xp, **options)

    def implementation(self, name, xp):
        """Fusing no check: the loss's own checks run, and show in what it allocates."""
        from kldiv._dispatch import Implementation

        return Implementation(self.softmax_kl_loss, frozenset())

    def fast_path(self, name, xp):
        """No loss against labels without the one-hot target: that target is what is measured."""
        assert name == "softmax_kl_loss_labels"


def traced_peak(run) -> int:
    """Bytes allocated at the peak of ``run()`` beyond what was allocated before it."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def big_float32_rows() -> tuple[np.ndarray, np.ndarray]:
    """16 MiB each: logits and a distribution normalised in float32."""
    rng = np.random.default_rng(37)
    pred = rng.standard_normal((4096, 1024), dtype=np.float32)
    target = rng.random((4096, 1024), dtype=np.float32) + np.float32(0.01)
    target /= target.sum(axis=1, keepdims=True, dtype=np.float32)
    return pred, target


@pytest.mark.parametrize("norm_target", [False, True])
def test_the_loss_own_code_does_not_copy_a_float32_target(monkeypatch, norm_target):
    """Validation, reshapes and checks: well under a quarter of the target's size (a float64
    copy of it was twice its size, the bool masks of the old checks three quarters)."""
    pred, target = big_float32_rows()
    grad = np.empty_like(pred)
    monkeypatch.setattr(kldiv.loss, "_dispatch", _StubBackend(grad))
    div = KLDivergence(normTarget=norm_target)
    peak = traced_peak(lambda: div(pred, target))
    assert peak < target.nbytes / 4, f"{peak / 2**20:.1f} MiB for a 16 MiB target"


def test_one_hot_labels_take_preds_dtype(monkeypatch):
    """The one-hot target of (N, C) labels is float32 for a float32 pred: one pred's size,
    plus the comparison's bools, not a float64 copy (twice that)."""
    pred, _ = big_float32_rows()
    labels = np.random.default_rng(38).integers(0, 1024, 4096)
    grad = np.empty_like(pred)
    monkeypatch.setattr(kldiv.loss, "_dispatch", _StubBackend(grad))
    peak = traced_peak(lambda: KLDivergence(maxlabels=1024)(pred, labels))
    assert peak < 1.5 * pred.nbytes, f"{peak / 2**20:.1f} MiB for a 16 MiB pred"


@pytest.mark.skipif(nb._native is None, reason="kldiv._backends.numpy._native is not built")
@pytest.mark.parametrize("shape", [(64, 10), (8, 5, 3, 4)])
def test_float32_labels_run_the_label_kernel(shape, monkeypatch):
    """float32 pred against labels: the compiled kernel, no one-hot target; a row with a
    -inf logit (a masked class) redone by the tiles on its one-hot target; an unchecked label
    out of range a NaN row."""
    native = nb._native
    calls = []

    class Recording:
        def __getattr__(self, attr):
            return getattr(native, attr)

        def loss_label_rows(self, *args, **kwargs):
            calls.append(args[1].shape)
            return native.loss_label_rows(*args, **kwargs)

    monkeypatch.setattr(nb, "_native", Recording())
    rng = np.random.default_rng(39)
    pred = (3 * rng.standard_normal(shape)).astype(np.float32)
    labels = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    masked = (labels.reshape(shape[0], -1)[2, 0] + 1) % shape[1]  # not position 0's label
    pred.reshape(shape[0], -1)[2, masked * math.prod(shape[2:])] = -np.inf
    error, grad = KLDivergence()(pred, labels)
    assert sum(rows for rows, _ in calls) == shape[0]  # every sample, on every worker
    assert {positions for _, positions in calls} == {math.prod(shape[2:])}
    want_error, want_grad = reference(pred.astype(np.float64), one_hot(labels, shape[1]), False)
    assert error == pytest.approx(want_error, rel=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=0, atol=2 * np.finfo(np.float32).eps)
    bad = labels.copy()
    bad.reshape(shape[0], -1)[4, 0] = shape[1]
    error, grad = KLDivergence(validate=False)(pred, bad)
    assert math.isnan(error)
    rows = grad.reshape(shape[0], -1)
    assert np.isnan(rows[4]).all()
    assert np.isfinite(np.delete(rows, 4, axis=0)).all()


def test_labels_take_no_one_hot_target():
    """float32 (4096, 1024) against labels: the grad and next to nothing else (the one-hot
    target was a pred's size)."""
    pred, _ = big_float32_rows()
    labels = np.random.default_rng(38).integers(0, 1024, 4096)
    KLDivergence(maxlabels=1024)(pred[:512], labels[:512])  # first-call work first
    peak = traced_peak(lambda: KLDivergence(maxlabels=1024)(pred, labels))
    limit = pred.nbytes + (2**20 if nb._native is not None else pred.nbytes)
    assert peak < limit, f"{peak / 2**20:.1f} MiB for a 16 MiB pred"


@pytest.mark.parametrize("norm_target", [False, True])
def test_a_long_row_loss_takes_a_few_mib_besides_its_grad(norm_target):
    """(2, 16, 256, 256) float32 maps, rows of a million: the loss kernel takes them in
    chunks, with scratch of three chunks whatever the row (it was three rows)."""
    rng = np.random.default_rng(40)
    pred = rng.standard_normal((2, 16, 256, 256), dtype=np.float32)
    target = rng.random(pred.shape, dtype=np.float32) + np.float32(0.01)
    if not norm_target:
        target /= target.sum(axis=(1, 2, 3), keepdims=True, dtype=np.float32)
    div = KLDivergence(normTarget=norm_target)
    div(pred[:1, :1], target[:1, :1] if norm_target else np.full((1, 1, 256, 256), 2.0**-16))
    peak = traced_peak(lambda: div(pred, target))
    if nb._native is not None:  # the NumPy tiles take such rows to the generic code
        assert peak < pred.nbytes + 4 * 2**20, f"{peak / 2**20:.1f} MiB for an 8 MiB pred"
    want_error, want_grad = reference(
        pred.reshape(2, -1).astype(np.float64), target.reshape(2, -1), norm_target
    )
    error, grad = div(pred, target)
    assert error == pytest.approx(want_error, rel=1e-6)
    np.testing.assert_allclose(grad.reshape(2, -1), want_grad, rtol=0, atol=1e-7)


def test_a_loss_call_adds_little_to_its_arithmetic():
    """The whole call, besides what the backend's arithmetic takes by itself (the grad and
    its per-thread tiles), stays under a quarter of the float32 target's size."""
    from kldiv import _dispatch

    pred, target = big_float32_rows()
    xp = array_api_compat.array_namespace(pred)
    loss = _dispatch.implementation("softmax_kl_loss", xp).func
    KLDivergence()(pred[:512], target[:512])  # first-call work (thread pool, imports) first
    arithmetic = traced_peak(lambda: loss(pred, target, norm_target=False, xp=xp))
    whole = traced_peak(lambda: KLDivergence()(pred, target))
    assert whole - arithmetic < target.nbytes / 4, (whole / 2**20, arithmetic / 2**20)


# ---- item 16: PuzzleLib's behaviour where it was a difference -------------------------------


@pytest.mark.parametrize(
    ("pred_shape", "target_shape", "maxlabels"),
    [((2, 5), (3, 5), None), ((2, 5), (2, 4), None), ((2, 5), (2, 5), 4), ((5,), (5,), None)],
)
def test_shape_refusals_are_assertion_errors_as_in_puzzlelib(
    xp, pred_shape, target_shape, maxlabels
):
    pred = asarray(xp, np.zeros(pred_shape), "float32")
    target = asarray(xp, np.full(target_shape, 0.2), "float32")
    div = KLDivergence(maxlabels=maxlabels)
    with pytest.raises(AssertionError) as info:
        div(pred, target)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, KLDivergenceError)
    with pytest.raises(AssertionError):
        div.validate(pred, target)


def test_getValError_is_cleared_by_a_training_call_as_in_puzzlelib():
    rng = np.random.default_rng(39)
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    div = KLDivergence(normTarget=True)
    assert div.getValError() is None
    val = div.validate(pred, target)
    assert div.getValError() == val
    div(pred, target, queryError=False)
    assert div.getValError() is None  # PuzzleLib's reset() on every call
    val = div.validate(pred, target)
    with pytest.raises(AssertionError):
        div(pred, target[:2])  # refused before reset(), in PuzzleLib too: kept
    assert div.getValError() == val
    div(pred, target)
    assert div.getValError() is None


def test_getMeanError_before_any_batch_raises():
    with pytest.raises(RuntimeError, match="no sample"):
        KLDivergence().getMeanError()


@pytest.mark.parametrize("norm_target", [False, True])
def test_float32_refusals_come_through_the_compiled_kernel(norm_target):
    """float32 rows take the compiled loss kernel, which checks as it goes; what it flags is
    named as the up-front checks name it."""
    rng = np.random.default_rng(5)
    pred = rng.standard_normal((64, 50)).astype(np.float32)
    target = rng.random((64, 50)).astype(np.float32) + 0.01
    target /= target.sum(1, keepdims=True)
    div = KLDivergence(normTarget=norm_target)
    bad_pred = pred.copy()
    bad_pred[7, 3] = np.nan
    with pytest.raises(KLDivergenceError, match="pred has a NaN entry"):
        div(bad_pred, target)
    if not norm_target:
        off = target.copy()
        off[9] *= 1.5
        with pytest.raises(KLDivergenceError, match=r"^target"):
            div(pred, off)
        negative = target.copy()
        negative[2, 2] = -1e-9
        with pytest.raises(KLDivergenceError, match=r"^target has a negative entry"):
            div(pred, negative)
    # allowed: masked classes (-inf logits, redone off the kernel) the target gives no mass
    masked, masked_target = pred.copy(), target.copy()
    masked[4, :3] = -np.inf
    if norm_target:
        masked_target[4, :3] = -np.inf
    else:
        masked_target[4, :3] = 0
        masked_target[4] /= masked_target[4].sum()
    error, _ = div(masked, masked_target)
    expected, _ = KLDivergence(normTarget=norm_target)(
        masked.astype(np.float64), masked_target.astype(np.float64)
    )
    assert error == pytest.approx(expected, rel=1e-6)
