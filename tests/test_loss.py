"""KLDivergence: PuzzleLib's behaviour, on every backend, with better numerics."""

from __future__ import annotations

import math

import array_api_compat
import numpy as np
import pytest

from kldiv import KLDivergence
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
    with pytest.raises(ValueError, match=r"^pred has a nan entry at index \(0, 1\)"):
        KLDivergence(normTarget=True)(nan_pred, pred)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="maxlabels must be a positive int"):
        KLDivergence(maxlabels=0)
    with pytest.raises(ValueError, match="maxlabels must be a positive int"):
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
    with pytest.raises(ValueError, match=r"^pred has a nan entry at index \(1, 2, 1, 0\)"):
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
