"""Every row of kldiv's table, on every library: its values against the NumPy reference,
its axis, keepdims and broadcasting rules, and its checks.

A divergence added to :mod:`kldiv._table`, with its reference in ``tests/_references.py``,
is tested here with nothing else to write.
"""

from __future__ import annotations

import array_api_compat
import mpmath
import numpy as np
import pytest

import kldiv
from kldiv import _agnostic
from kldiv._table import DIVERGENCES
from tests._helpers import asarray, assert_result, dtype_of, random_distributions, to_numpy
from tests._references import NAMES, PROBABILITY_REDUCTIONS, REDUCTIONS, call, inputs, reference


def rtol(xp, dtype: str) -> float:
    """float32 results are computed in float64 and rounded, where the device has float64."""
    if dtype == "float64":
        return 1e-12
    info = xp.__array_namespace_info__()
    has64 = "float64" in info.dtypes(device=info.default_device(), kind="real floating")
    return 2e-6 if has64 else 1e-4


def lazy(xp) -> bool:
    return array_api_compat.is_dask_namespace(xp)


@pytest.mark.parametrize("name", NAMES)
def test_every_row_has_a_function_a_generic_implementation_and_a_reference(name):
    from tests._references import REFERENCES

    assert callable(getattr(kldiv, name))
    assert name in kldiv.__all__
    assert callable(getattr(_agnostic, name))
    assert name in REFERENCES


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_values_match_the_reference(xp, name, dtype):
    p_np, q_np = (x.astype(dtype) for x in inputs(name, (5, 7), seed=3))
    p, q = asarray(xp, p_np, dtype), asarray(xp, q_np, dtype)
    expected = reference(name, p_np, q_np)
    got = assert_result(call(name, p, q), p, dtype=dtype_of(xp, dtype), shape=expected.shape)
    np.testing.assert_allclose(got, expected, rtol=rtol(xp, dtype), atol=1e-12)


def along(name: str, shape: tuple[int, ...], axis, seed: int) -> np.ndarray:
    """Distributions along ``axis`` (logits for kl_div_logits)."""
    rng = np.random.default_rng(seed)
    if DIVERGENCES[name].logits:
        return rng.standard_normal(shape) * 3
    return random_distributions(rng, shape, axis)


@pytest.mark.parametrize(("axis", "kept"), [(1, (4, 1, 5)), ((1, 2), (4, 1, 1)), (0, (1, 6, 5))])
@pytest.mark.parametrize("name", REDUCTIONS)
def test_axis_keepdims_and_one_q_against_a_batch(xp, name, axis, kept):
    p_np = along(name, (4, 6, 5), axis, seed=4)
    q_np = along(name, (1, 6, 5) if axis != 0 else (4, 1, 5), axis, seed=5)
    p, q = asarray(xp, p_np, "float64"), asarray(xp, q_np, "float64")
    axes = (axis,) if isinstance(axis, int) else axis
    rest = [i for i in range(3) if i not in axes]

    # the reference takes each distribution along its last axis: flatten the axes there
    def rows(x: np.ndarray) -> np.ndarray:
        x = np.transpose(np.broadcast_to(x, p_np.shape), (*rest, *axes))
        return x.reshape(*x.shape[: len(rest)], -1)

    expected = reference(name, rows(p_np), rows(q_np)).reshape(kept)
    got = assert_result(call(name, p, q, axis=axis, keepdims=True), p, dtype=xp.float64, shape=kept)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    if len(DIVERGENCES[name].inputs) == 2:  # the batch second
        shape = expected.squeeze(axes).shape
        got = assert_result(call(name, q, p, axis=axis), p, dtype=xp.float64, shape=shape)
        np.testing.assert_allclose(got, reference(name, rows(q_np), rows(p_np)), rtol=1e-12)


@pytest.mark.parametrize("name", PROBABILITY_REDUCTIONS)
@pytest.mark.parametrize("bad", ["negative", "negative, sum 1", "nan", "unnormalised"])
def test_bad_distributions_raise_naming_the_argument_or_give_nan(xp, name, bad):
    p_np, q_np = inputs(name, (3, 4), seed=5)
    arity = len(DIVERGENCES[name].inputs)
    target = arity - 1  # the last argument, so that the first is seen to pass
    arrays = [p_np.copy(), q_np.copy()]
    if bad == "negative":
        arrays[target][1, 1] = -arrays[target][1, 1]
    elif bad == "negative, sum 1":  # the row still sums to 1: only the sign check sees it
        arrays[target][1, 0] += 2 * arrays[target][1, 1]
        arrays[target][1, 1] = -arrays[target][1, 1]
    elif bad == "nan":
        arrays[target][1, 1] = np.nan
    else:
        arrays[target][1] *= 1.01
    args = [asarray(xp, x, "float64") for x in arrays]
    arg = DIVERGENCES[name].inputs[target]
    if lazy(xp):
        got = to_numpy(call(name, *args))
        assert np.isnan(got[1]), got
        assert np.isfinite(got[[0, 2]]).all(), got
        return
    with pytest.raises(ValueError, match=rf"^{arg} "):
        call(name, *args)
    unchecked = to_numpy(call(name, *args, validate=False))
    assert np.isfinite(unchecked[[0, 2]]).all(), unchecked
    if bad != "unnormalised":
        assert np.isnan(unchecked[1]), unchecked


@pytest.mark.parametrize("name", [n for n in NAMES if DIVERGENCES[n].finish == "sqrt"])
def test_a_square_root_at_zero_has_a_zero_gradient(name):
    torch = pytest.importorskip("torch")
    p = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64, requires_grad=True)
    out = call(name, p, p.detach().clone())
    assert float(out.detach()[0]) == 0.0
    out.sum().backward()
    torch.testing.assert_close(p.grad, torch.zeros_like(p))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_the_inputs_are_not_changed(xp, name, dtype):
    p_np, q_np = (x.astype(dtype) for x in inputs(name, (3, 4), seed=6))
    p, q = asarray(xp, p_np, dtype), asarray(xp, q_np, dtype)
    call(name, p, q)
    np.testing.assert_array_equal(to_numpy(p), p_np)
    np.testing.assert_array_equal(to_numpy(q), q_np)


# hellinger and total_variation, the table's latest rows


def _mp_hellinger(p: np.ndarray, q: np.ndarray) -> float:
    with mpmath.workdps(50):
        s = sum(
            (mpmath.sqrt(mpmath.mpf(float(a))) - mpmath.sqrt(mpmath.mpf(float(b)))) ** 2
            for a, b in zip(p, q, strict=True)
        )
        return float(mpmath.sqrt(s / 2))


@pytest.mark.parametrize("scale", [1e-3, 1e-6, 1e-9])
def test_hellinger_keeps_its_digits_for_near_identical_distributions(scale):
    rng = np.random.default_rng(7)
    p = rng.uniform(0.1, 1, 50)
    p /= p.sum()
    q = p * (1 + scale * rng.standard_normal(50))
    q /= q.sum()
    got = float(kldiv.hellinger(p, q))
    np.testing.assert_allclose(got, _mp_hellinger(p, q), rtol=1e-12)


def test_hellinger_and_total_variation_at_their_bounds(xp):
    p = asarray(xp, [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], "float64")
    q = asarray(xp, [[0.0, 0.0, 1.0], [0.0, 0.5, 0.5], [0.2, 0.3, 0.5]], "float64")
    np.testing.assert_allclose(to_numpy(kldiv.hellinger(p, q)), [1.0, np.sqrt(0.5), 0.0])
    np.testing.assert_allclose(to_numpy(kldiv.total_variation(p, q)), [1.0, 0.5, 0.0])
