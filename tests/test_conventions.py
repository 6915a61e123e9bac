"""``reduction``, ``weights``, ``normalize``, ``where`` and keyword arrays (kldiv._conventions),
on every row of the table and every library of the ``xp`` fixture, against NumPy float64
references built from the per-distribution formulas, SciPy and PyTorch."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

import kldiv
from tests._helpers import asarray, to_numpy
from tests._references import NAMES, PROBABILITY_REDUCTIONS, REDUCTIONS, call, inputs, reference

# (B, T, V): the shape on which PyTorch's batchmean divides by B only
SHAPE = (3, 4, 5)


def _rtol(xp):
    return 1e-6 if "jax" in xp.__name__ else 1e-12


@pytest.mark.parametrize("name", REDUCTIONS)
@pytest.mark.parametrize("reduction", ["sum", "mean", "batchmean"])
def test_reductions_of_every_divergence(xp, name, reduction):
    a, b = inputs(name, SHAPE, seed=1)
    rows = reference(name, a, b)  # (3, 4): one value per batch position
    expected = {
        "sum": rows.sum(),
        "batchmean": rows.mean(),  # over all B*T positions, not B
        "mean": rows.mean() / SHAPE[-1],
    }[reduction]
    got = call(name, asarray(xp, a, "float64"), asarray(xp, b, "float64"), reduction=reduction)
    assert tuple(got.shape) == ()
    np.testing.assert_allclose(to_numpy(got), expected, rtol=_rtol(xp))


# PyTorch warns that its 'mean' will change meaning; this is its meaning today
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
@pytest.mark.parametrize("reduction", ["sum", "mean", "batchmean"])
def test_reductions_of_2d_rows_are_torchs(reduction):
    """On (N, V) rows, kldiv's sum, mean and batchmean are F.kl_div's (its arguments
    reversed: the log of q first)."""
    p, q = inputs("kl_div", (6, 7), seed=2)
    want = F.kl_div(torch.from_numpy(q).log(), torch.from_numpy(p), reduction=reduction)
    got = kldiv.kl_div(p, q, reduction=reduction)
    np.testing.assert_allclose(got, want.item(), rtol=1e-12)


def test_batchmean_is_the_mean_over_every_batch_position_unlike_torchs():
    p, q = inputs("kl_div", SHAPE, seed=3)
    torch_batchmean = F.kl_div(
        torch.from_numpy(q).log(), torch.from_numpy(p), reduction="batchmean"
    )
    per_row = kldiv.kl_div(p, q)
    assert kldiv.kl_div(p, q, reduction="batchmean") == pytest.approx(per_row.mean(), rel=1e-13)
    # PyTorch divides the sum by B = 3, not by the 12 positions
    assert torch_batchmean.item() == pytest.approx(per_row.sum() / SHAPE[0], rel=1e-12)


@pytest.mark.parametrize("name", REDUCTIONS)
def test_weights_scale_each_position(xp, name):
    a, b = inputs(name, SHAPE, seed=4)
    w = np.random.default_rng(5).uniform(0, 2, SHAPE[:-1])
    rows = reference(name, a, b)
    xa, xb, xw = (asarray(xp, x, "float64") for x in (a, b, w))
    np.testing.assert_allclose(to_numpy(call(name, xa, xb, weights=xw)), rows * w, rtol=_rtol(xp))
    got = call(name, xa, xb, weights=xw, reduction="batchmean")
    np.testing.assert_allclose(to_numpy(got), np.sum(rows * w) / np.sum(w), rtol=_rtol(xp))
    # one weight per first-axis position, broadcast over the second
    w1 = asarray(xp, w[:, :1], "float64")
    got = call(name, xa, xb, weights=w1, reduction="sum")
    np.testing.assert_allclose(to_numpy(got), np.sum(rows * w[:, :1]), rtol=_rtol(xp))


def test_bad_weights_are_refused_or_nan_when_lazy():
    p, q = inputs("kl_div", (2, 3), seed=6)
    with pytest.raises(ValueError, match=r"weights must be finite and >= 0; entry 1 is -1\.0"):
        kldiv.kl_div(p, q, weights=np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="do not broadcast to the result"):
        kldiv.kl_div(p, q, weights=np.ones((2, 2)))
    with pytest.raises(TypeError, match="one library"):
        kldiv.kl_div(p, q, weights=torch.ones(2, dtype=torch.float64))
    da = pytest.importorskip("dask.array")
    got = kldiv.kl_div(
        da.from_array(p), da.from_array(q), weights=da.from_array(np.array([1.0, -1.0]))
    )
    out = got.compute()
    assert np.isfinite(out[0])
    assert np.isnan(out[1])


@pytest.mark.parametrize("name", PROBABILITY_REDUCTIONS)
def test_normalize_divides_counts_by_their_sums(xp, name):
    rng = np.random.default_rng(7)
    counts = rng.integers(1, 9, SHAPE)
    others = rng.integers(1, 9, SHAPE)
    got = call(name, xp.asarray(counts), xp.asarray(others), normalize=True)
    floating = xp.__array_namespace_info__().default_dtypes()["real floating"]
    assert got.dtype == floating  # integer counts: the library's default floating dtype
    # the reference of the rows as normalised in that dtype (float32 for torch and JAX)
    kind = np.float32 if got.dtype == xp.float32 else np.float64
    p, q = ((x / x.sum(-1, keepdims=True)).astype(kind) for x in (counts, others))
    rtol = 1e-5 if kind == np.float32 else 1e-12
    np.testing.assert_allclose(to_numpy(got), reference(name, p, q), rtol=rtol)


def test_normalize_is_scipys_entropy():
    """The issue's example: unnormalised rows, which validate=False summed as they are."""
    p = np.array([0.9, 0.8, 0.7])
    q = np.array([0.1, 0.2, 0.3])
    assert kldiv.kl_div(p, q, normalize=True) == pytest.approx(scipy.stats.entropy(p, q), rel=1e-14)
    assert kldiv.entropy(np.array([1, 2, 3]), normalize=True) == pytest.approx(
        scipy.stats.entropy([1, 2, 3]), rel=1e-14
    )
    assert kldiv.entropy(np.array([True, True, False]), normalize=True) == pytest.approx(
        math.log(2)
    )


def test_normalize_keeps_the_checks_and_names_a_zero_sum():
    with pytest.raises(ValueError, match=r"^p .*negative"):
        kldiv.kl_div(np.array([2.0, -1.0, 1.0]), np.ones(3), normalize=True)
    with pytest.raises(
        ValueError, match=r"q cannot be normalised: its distribution at batch index 1 sums to 0"
    ):
        kldiv.kl_div(np.ones((2, 3)), np.array([[1.0, 1, 1], [0, 0, 0]]), normalize=True)
    with pytest.raises(TypeError, match="normalize=True divides distributions"):
        kldiv.kl_div_logits(np.zeros(3), np.zeros(3), normalize=True)
    with pytest.raises(TypeError, match="real floating"):  # counts need normalize=True
        kldiv.kl_div(np.array([1, 2]), np.array([2, 1]))


@pytest.mark.parametrize("name", REDUCTIONS)
def test_where_masks_entries_out_of_every_divergence(xp, name):
    """A masked entry contributes nothing: the same as the divergence of the entries left,
    renormalised; a distribution masked entirely is NaN, and counts for nothing in a sum or
    a batchmean."""
    a, b = inputs(name, (4, 6), seed=8)
    mask = np.ones((4, 6), dtype=bool)
    mask[0, 4:] = False  # two padded classes
    mask[2, :] = False  # a padded position
    logits = kldiv._table.DIVERGENCES[name].logits
    if not logits:  # the entries left sum to 1 (padding holds garbage mass)
        a[0, :4] /= a[0, :4].sum()
        b[0, :4] /= b[0, :4].sum()
    want = reference(name, a, b)
    want[0] = reference(name, a[:1, :4], b[:1, :4])[0]
    want[2] = np.nan
    xa, xb = asarray(xp, a, "float64"), asarray(xp, b, "float64")
    xm = xp.asarray(mask)
    np.testing.assert_allclose(to_numpy(call(name, xa, xb, where=xm)), want, rtol=_rtol(xp))
    live = want[[0, 1, 3]]
    got_sum = to_numpy(call(name, xa, xb, where=xm, reduction="sum"))
    np.testing.assert_allclose(got_sum, live.sum(), rtol=_rtol(xp))
    got_mean = to_numpy(call(name, xa, xb, where=xm, reduction="batchmean"))
    np.testing.assert_allclose(got_mean, live.mean(), rtol=_rtol(xp))


def test_where_with_normalize_renormalises_the_entries_left():
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.2, 0.6])
    mask = np.array([True, True, False])
    got = kldiv.kl_div(p, q, where=mask, normalize=True)
    assert got == pytest.approx(scipy.stats.entropy(p[:2], q[:2]), rel=1e-14)


def test_where_of_elementwise_terms_and_bad_masks():
    p, q = inputs("kl_div", (2, 3), seed=9)
    mask = np.array([[True, False, True], [False, False, True]])
    got = kldiv.rel_entr(p, q, where=mask)
    np.testing.assert_allclose(got, np.where(mask, scipy.special.rel_entr(p, q), 0.0), rtol=1e-14)
    got = kldiv.rel_entr(p, q, where=mask, reduction="mean")
    assert got == pytest.approx(scipy.special.rel_entr(p, q)[mask].mean(), rel=1e-14)
    with pytest.raises(TypeError, match="where must be a boolean mask"):
        kldiv.kl_div(p, q, where=np.ones((2, 3)))
    listed = kldiv.rel_entr(p, q, where=mask.tolist())  # a list of bools is a mask too
    np.testing.assert_array_equal(listed, kldiv.rel_entr(p, q, where=mask))
    with pytest.raises(ValueError, match="do not broadcast"):
        kldiv.kl_div(p, q, where=np.ones((3, 3), dtype=bool))


def test_where_on_lazy_arrays_stays_lazy():
    da = pytest.importorskip("dask.array")
    p, q = inputs("kl_div", (4, 6), seed=10)
    mask = np.ones((4, 6), dtype=bool)
    mask[1] = False
    got = kldiv.kl_div(
        da.from_array(p, chunks=2),
        da.from_array(q, chunks=2),
        where=da.from_array(mask, chunks=2),
        reduction="sum",
    )
    assert isinstance(got, da.Array)
    assert got.compute() == pytest.approx(np.sum(kldiv.kl_div(p, q)[[0, 2, 3]]), rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_arrays_by_keyword_and_functools_partial(name):
    row = kldiv._table.DIVERGENCES[name]
    a, b = inputs(name, (2, 5), seed=11)
    arrays = dict(zip(row.inputs, (a, b), strict=False))
    want = call(name, a, b)
    func = getattr(kldiv, name)
    np.testing.assert_array_equal(func(**arrays), want)
    if len(row.inputs) == 2:
        second = row.inputs[1]
        fixed = functools.partial(func, **{second: arrays[second]})
        np.testing.assert_array_equal(fixed(arrays[row.inputs[0]]), want)


def test_unknown_reduction():
    with pytest.raises(
        ValueError, match="reduction must be one of 'none', 'sum', 'mean', 'batchmean'"
    ):
        kldiv.kl_div(np.ones(2) / 2, np.ones(2) / 2, reduction="avg")


def test_reduction_none_with_keepdims():
    p, q = inputs("kl_div", SHAPE, seed=12)
    w = np.full(SHAPE[:-1], 2.0)
    got = kldiv.kl_div(p, q, weights=w, keepdims=True)
    np.testing.assert_allclose(got, 2 * kldiv.kl_div(p, q, keepdims=True), rtol=1e-15)
    assert got.shape == (3, 4, 1)
