"""The short path of the compiled reductions and of ``kl_div_logits``
(kldiv._backends.numpy._short), small calls and large, gives what the full path gives, and
steps aside for everything it does not take."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import kldiv
from kldiv._backends.numpy import _short
from kldiv._table import DIVERGENCES
from tests._helpers import full_path_only, random_distributions

torch = pytest.importorskip("torch")
LIBRARIES = ["numpy", "torch", "jax"]


def to_library(library, *arrays):
    """The arrays as ``library``'s: CPU tensors, or JAX arrays (made under :func:`x64`)."""
    if library == "torch":
        return tuple(torch.from_numpy(x) for x in arrays)
    if library == "jax":
        jax = pytest.importorskip("jax")
        return tuple(jax.numpy.asarray(x) for x in arrays)
    return arrays


def x64(library):
    """JAX's float64 switched on for a JAX test's body (so that float64 stays float64),
    and off again after it; nothing for the other libraries."""
    if library != "jax":
        return contextlib.nullcontext()
    return pytest.importorskip("jax").enable_x64(True)


def assert_same_result(got, expected):
    """The same type, dtype, shape, device and values, bit for bit up to ``rtol``."""
    assert type(got) is type(expected)
    assert got.dtype == expected.dtype
    assert tuple(got.shape) == tuple(expected.shape)
    if hasattr(expected, "committed"):  # JAX: placed as the full path places it
        assert got.device == expected.device
        assert got.committed == expected.committed


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
    with full_path_only():
        return getattr(kldiv, name)(*args(name, p, q), **options)


def inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [random_distributions(rng, shape).astype(dtype) for _ in range(2)]


# below parallel_min (one compiled call here) and above it (the pool, two threads)
SHAPES = [pytest.param((3, 5), id="small"), pytest.param((300, 1000), id="large")]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", CALLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("name", SHORT)
def test_the_short_path_equals_the_full_path(name, library, dtype, options, shape):
    if "base" in options and not DIVERGENCES[name].base:
        pytest.skip(f"{name} has no base")
    with x64(library):
        short_path_equals_full_path(name, library, dtype, options, shape)


def short_path_equals_full_path(name, library, dtype, options, shape):
    p, q = inputs(shape, dtype)
    assert (p.size < kldiv.get_options().parallel_min) == (shape == (3, 5))
    p, q = to_library(library, p, q)
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
    with kldiv.options(threads=2):
        got = getattr(kldiv, name)(*args(name, p, q), **options)
        expected = full_path(p, q, name, **options)
    assert_same_result(got, expected)
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


def test_a_large_call_redoes_the_rows_its_kernels_leave_nan():
    """Above parallel_min the short path runs the pool and the full path's redo: a q of 0
    under a p > 0 (+inf) and a subnormal entry leave their rows to the NumPy tiles, and the
    result is the full path's, bit for bit, without the full path."""
    p, q = inputs((300, 1000), "float64")
    q[7, 3:5] = [0.0, q[7, 3] + q[7, 4]]  # p[7, 3] > 0: +inf
    p[150, :2] = [1e-310, p[150, 0] + p[150, 1] - 1e-310]  # a subnormal
    with kldiv.options(threads=2):
        got = _short.reduction("kl_div", (p, q), -1, False, None, True)
        assert got is not None
        assert got[7] == np.inf
        np.testing.assert_array_equal(got, full_path(p, q))


@pytest.mark.parametrize("case", ["negative", "unnormalised"])
def test_a_large_call_with_a_bad_row_goes_the_full_way(case):
    p, q = inputs((300, 1000), "float32")
    if case == "negative":
        p[200, 5] = -p[200, 5]
    else:
        p[200] *= 1.1
    with kldiv.options(threads=2):
        assert _short.reduction("kl_div", (p, q), -1, False, None, True) is None
        with pytest.raises(ValueError, match=r"^p "):
            kldiv.kl_div(p, q)


def logit_inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [(3 * rng.standard_normal(shape)).astype(dtype) for _ in range(2)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", CALLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("library", LIBRARIES)
def test_the_short_path_of_logits_equals_the_full_path(library, dtype, options, shape):
    with x64(library):
        short_path_of_logits_equals_full_path(library, dtype, options, shape)


def short_path_of_logits_equals_full_path(library, dtype, options, shape):
    a, b = logit_inputs(shape, dtype)
    a[1, 2] = -np.inf  # a masked class: the kernel leaves the row, the tiles redo it
    a, b = to_library(library, a, b)
    axis, keepdims = options.get("axis", -1), options.get("keepdims", False)
    validate = options.get("validate", True)
    assert _short.logits((a, b), axis, keepdims, options.get("base"), validate) is not None
    with kldiv.options(threads=2):
        got = kldiv.kl_div_logits(a, b, **options)
        with full_path_only():
            expected = kldiv.kl_div_logits(a, b, **options)
    assert_same_result(got, expected)
    # the full path divides by log(base) in JAX, which XLA may take as a product: an ulp
    rtol = 2 * np.finfo(dtype).eps if library == "jax" and "base" in options else 0
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=rtol, atol=0)


@pytest.mark.parametrize("case", ["nan", "+inf", "all -inf", "broadcast", "mixed dtypes"])
def test_logits_it_does_not_take_go_the_full_way(case):
    a, b = logit_inputs((3, 5), "float64")
    if case == "nan":
        a[0, 1] = np.nan
    elif case == "+inf":
        b[2, 0] = np.inf
    elif case == "all -inf":
        a[1] = -np.inf
    elif case == "broadcast":
        b = b[0]
    else:
        b = b.astype(np.float32)
    assert _short.logits((a, b), -1, False, None, True) is None
    if case in ("broadcast", "mixed dtypes"):
        with full_path_only():
            expected = kldiv.kl_div_logits(a, b)
        np.testing.assert_array_equal(kldiv.kl_div_logits(a, b), expected)
        return
    with pytest.raises(ValueError, match=r"^[ab][ :]"):
        kldiv.kl_div_logits(a, b)
    with full_path_only():
        expected = kldiv.kl_div_logits(a, b, validate=False)
    np.testing.assert_array_equal(kldiv.kl_div_logits(a, b, validate=False), expected)
    assert np.isnan(expected).any() == (case != "all -inf")


def test_jax_arrays_it_does_not_take_go_the_full_way():
    """Tracers (under jit), arrays committed to different devices or mixed with NumPy's."""
    jax = pytest.importorskip("jax")
    p, q = (jax.numpy.asarray(x) for x in inputs((3, 5), "float32"))
    seen = []

    def traced(a, b):
        seen.append(_short.reduction("kl_div", (a, b), -1, False, None, True))
        return kldiv.kl_div(a, b)

    np.testing.assert_allclose(jax.jit(traced)(p, q), kldiv.kl_div(p, q), rtol=1e-5)
    assert seen == [None]
    assert _short.reduction("kl_div", (p, np.asarray(q)), -1, False, None, True) is None
    committed = jax.device_put(p, jax.devices("cpu")[0])
    got = kldiv.kl_div(committed, q)
    assert got.committed
