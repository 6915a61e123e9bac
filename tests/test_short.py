"""The short path for small calls of the compiled reductions (kldiv._backends.numpy._short)
gives what the full path gives, and steps aside for everything it does not take."""

from __future__ import annotations

import numpy as np
import pytest

import kldiv
from kldiv._backends.numpy import _short
from kldiv._table import DIVERGENCES
from tests._helpers import random_distributions

torch = pytest.importorskip("torch")

CALLS = [
    pytest.param({}, id="defaults"),
    pytest.param({"keepdims": True}, id="keepdims"),
    pytest.param({"base": 2}, id="base"),
    pytest.param({"validate": False}, id="unvalidated"),
    pytest.param({"axis": 1}, id="last-axis-positive"),
]


SHORT = ["kl_div", "entropy", "cross_entropy", "js_div", "hellinger", "total_variation"]


def args(name, p, q):
    return (p,) if name == "entropy" else (p, q)


def full_path(p, q, name="kl_div", **options):
    with kldiv.options(parallel_min=0):  # nothing is below 0 elements: the short path declines
        return getattr(kldiv, name)(*args(name, p, q), **options)


def inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [random_distributions(rng, shape).astype(dtype) for _ in range(2)]


@pytest.mark.parametrize("options", CALLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("name", SHORT)
def test_the_short_path_equals_the_full_path(name, library, dtype, options):
    if "base" in options and not DIVERGENCES[name].base:
        pytest.skip(f"{name} has no base")
    p, q = inputs((3, 5), dtype)
    if library == "torch":
        p, q = torch.from_numpy(p), torch.from_numpy(q)
    assert (
        _short.reduction(
            name,
            args(name, p, q),
            options.get("axis", -1),
            options.get("keepdims", False),
            options.get("base"),
            options.get("validate", True),
        )
        is not None
    )
    got = getattr(kldiv, name)(*args(name, p, q), **options)
    expected = full_path(p, q, name, **options)
    assert type(got) is type(expected)
    assert got.dtype == expected.dtype
    assert tuple(got.shape) == tuple(expected.shape)
    # the full path may redo a row in float64 tiles (a JS row near p == q), one rounding apart
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "case",
    [
        "zeros",
        "negative",
        "unnormalised",
        "mixed dtypes",
        "transposed",
        "axis tuple",
        "bool axis",
        "0-d",
        "broadcast",
        "requires grad",
        "masked",
    ],
)
def test_what_it_does_not_take_goes_the_full_way(case):
    p, q = inputs((3, 5), "float64")
    if case == "zeros":
        p[0] = [1, 0, 0, 0, 0]
        q[1, 2] = 0.0
        q[1] /= q[1].sum()
    elif case == "negative":
        p[1, 1] = -p[1, 1]
    elif case == "unnormalised":
        p[2] *= 1.1
    elif case == "mixed dtypes":
        q = q.astype(np.float32)
    elif case == "transposed":
        p, q = np.asfortranarray(p), np.asfortranarray(q)
    elif case == "broadcast":
        q = q[0]
    elif case == "0-d":
        p, q = np.float64(1.0) * np.ones(()), np.ones(())
    elif case == "requires grad":
        p, q = torch.from_numpy(p).requires_grad_(), torch.from_numpy(q)
    elif case == "masked":
        p = np.ma.masked_array(p)
    axis = {"axis tuple": (-1,), "bool axis": True}.get(case, -1)
    if case in ("0-d",):
        axis = None
    if case == "requires grad":
        assert _short.reduction("kl_div", (p, q), axis, False, None, True) is None
        return
    assert _short.reduction("kl_div", (p, q), axis, False, None, True) is None, case
    if case in ("negative", "unnormalised"):
        with pytest.raises(ValueError, match=r"^p "):
            kldiv.kl_div(p, q)
    elif case == "masked":
        with pytest.raises(TypeError, match="masked"):
            kldiv.kl_div(p, q)
    elif case not in ("axis tuple", "bool axis", "0-d"):
        np.testing.assert_array_equal(kldiv.kl_div(p, q), full_path(p, q))
