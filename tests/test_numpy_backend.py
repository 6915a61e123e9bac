"""The NumPy fast path against the generic code it must agree with, in every corner of its
tiling, threading and zero handling."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import array_api_compat.numpy as xp_np
import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special

import kldiv
from kldiv import _agnostic
from kldiv._backends import numpy as nb
from kldiv._table import DIVERGENCES
from tests._references import NAMES

# the functions of kldiv's table that this fast path has: the rest run the generic code
FAST = tuple(name for name in NAMES if hasattr(nb, name))
REDUCTIONS = tuple(name for name in FAST if DIVERGENCES[name].reduces)
PROBABILITY_OPS = tuple(name for name in REDUCTIONS if not DIVERGENCES[name].logits)
PAIR_OPS = tuple(name for name in PROBABILITY_OPS if len(DIVERGENCES[name].inputs) == 2)


def fast(name, *arrays, **kwargs):
    return getattr(kldiv, name)(*arrays, **kwargs)


def generic(name, *arrays, axis=-1, keepdims=False, validate=True):
    """The generic array-API code on the same NumPy arrays, finished as the public layer
    finishes it (Hellinger's square root)."""
    axes = tuple(sorted(a % arrays[0].ndim for a in (axis if isinstance(axis, tuple) else (axis,))))
    kwargs = {"axes": axes, "keepdims": keepdims, "validate": validate, "xp": xp_np}
    out = getattr(_agnostic, name)(*arrays, **kwargs)
    if name in DIVERGENCES and DIVERGENCES[name].finish is not None:
        out = kldiv._funcs._finish(out, DIVERGENCES[name], [], axes, keepdims, 1.0, xp_np)
    return np.asarray(out)


def distributions(rng, shape, dtype, zeros=0.0):
    x = rng.uniform(0.01, 1.0, shape)
    if zeros:
        x[rng.uniform(size=shape) < zeros] = 0
        x[..., 0] += 0.01
    return (x / x.sum(axis=-1, keepdims=True)).astype(dtype)


def args_for(name, rng, shape, dtype, zeros=0.0):
    if name == "kl_div_logits":
        return [(3 * rng.standard_normal(shape)).astype(dtype) for _ in range(2)]
    count = 1 if name == "entropy" else 2
    return [distributions(rng, shape, dtype, zeros) for _ in range(count)]


@pytest.fixture(
    params=["compiled", "compiled, threads", "NumPy, one tile", "NumPy, small tiles, threads"]
)
def tiling(request):
    """The compiled kernels (``kldiv._backends.numpy._native``), where built, and the pure
    NumPy path, each with the default tiling and with threads at any size; NumPy also with
    tiny tiles, so that small inputs cross tile, column-tile and thread boundaries."""
    settings: dict[str, object] = {"compiled": request.param.startswith("compiled")}
    if settings["compiled"] and nb._native is None:
        pytest.skip("kldiv._backends.numpy._native is not built")
    if "threads" in request.param:
        settings["parallel_min"] = 0
    if "small tiles" in request.param:
        settings["tile"] = 64
    with kldiv.options(**settings):
        yield request.param


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", REDUCTIONS)
@pytest.mark.parametrize("shape", [(37, 50), (5, 300), (3, 1), (1, 700)])
def test_fast_path_agrees_with_generic(tiling, name, shape, dtype):
    rng = np.random.default_rng(0)
    arrays = args_for(name, rng, shape, dtype)
    got = fast(name, *arrays)
    np.testing.assert_allclose(
        got, generic(name, *arrays), rtol=1e-12 if dtype == "float64" else 2e-7
    )
    assert got.dtype == np.dtype(dtype)


@pytest.mark.parametrize("name", PROBABILITY_OPS)
def test_zeros_in_p_and_q(tiling, name):
    rng = np.random.default_rng(1)
    arrays = args_for(name, rng, (40, 90), "float64", zeros=0.3)
    got = fast(name, *arrays, validate=False)
    np.testing.assert_allclose(got, generic(name, *arrays, validate=False), rtol=1e-12)


def test_zero_q_under_positive_p_is_inf_and_both_zero_is_nothing(tiling):
    p = np.tile([0.0, 0.5, 0.5, 0.0], (50, 1))
    q = np.tile([0.0, 0.25, 0.25, 0.5], (50, 1))
    q[7] = [0.5, 0.5, 0.0, 0.0]
    got = kldiv.kl_div(p, q)
    assert got[7] == np.inf
    np.testing.assert_allclose(np.delete(got, 7), np.log(2), rtol=1e-15)
    assert kldiv.cross_entropy(p, q)[7] == np.inf
    assert np.isfinite(kldiv.js_div(p, q)).all()


def test_subnormal_q_where_p_over_q_overflows(tiling):
    p = np.tile([0.5, 0.5], (20, 1))
    q = np.tile([1 - 1e-310, 1e-310], (20, 1))
    got = kldiv.kl_div(p, q)
    expected = 0.5 * np.log(0.5 / (1 - 1e-310)) + 0.5 * (np.log(0.5) - np.log(1e-310))
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    np.testing.assert_allclose(
        kldiv.rel_entr(p, q)[:, 1], 0.5 * (np.log(0.5) - np.log(1e-310)), rtol=1e-14
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rel_entr_agrees_with_generic(tiling, dtype):
    rng = np.random.default_rng(2)
    p = distributions(rng, (30, 70), dtype, zeros=0.2)
    q = distributions(rng, (30, 70), dtype, zeros=0.2)
    got = kldiv.rel_entr(p, q)
    expected = np.asarray(_agnostic.rel_entr(p, q, validate=True, xp=xp_np))
    np.testing.assert_allclose(got, expected, rtol=1e-12 if dtype == "float64" else 2e-7)
    assert got.dtype == np.dtype(dtype)


def test_broadcasting_tuple_axes_and_keepdims(tiling):
    rng = np.random.default_rng(3)
    p = rng.uniform(0.1, 1, (4, 3, 5, 6))
    p /= p.sum(axis=(2, 3), keepdims=True)
    q = rng.uniform(0.1, 1, (5, 6))
    q /= q.sum()
    for name in PAIR_OPS:
        got = fast(name, p, q, axis=(-2, -1), keepdims=True)
        assert got.shape == (4, 3, 1, 1)
        np.testing.assert_allclose(
            got,
            generic(name, p, np.broadcast_to(q, p.shape), axis=(2, 3), keepdims=True),
            rtol=1e-12,
        )


def test_layouts_that_are_no_row_view_fall_back_to_generic(tiling):
    rng = np.random.default_rng(4)
    # Distributions along the middle axis: (4, 30, 5) cannot be viewed as (20, 30) rows.
    p = np.moveaxis(distributions(rng, (4, 5, 30), "float64"), -1, 1).copy()
    q = np.moveaxis(distributions(rng, (4, 5, 30), "float64"), -1, 1).copy()
    assert nb._as_rows(p, p.shape, (1,)) is None
    for name in REDUCTIONS:
        arrays = (p, q)[: len(DIVERGENCES[name].inputs)]
        np.testing.assert_allclose(fast(name, *arrays, axis=1), generic(name, *arrays, axis=1))


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_give_the_serial_result_exactly(threads):
    rng = np.random.default_rng(5)
    p = distributions(rng, (64, 200), "float32")
    q = distributions(rng, (64, 200), "float32")
    with kldiv.options(tile=256, threads=1):
        serial = kldiv.kl_div(p, q)
    with kldiv.options(tile=256, threads=threads, parallel_min=0):
        np.testing.assert_array_equal(kldiv.kl_div(p, q), serial)


def test_the_calling_thread_takes_every_range_a_late_thread_leaves(monkeypatch):
    """_run's caller does not wait for the pool to start: with the pool's thread held up (as
    an idle core of a virtual machine can be for a millisecond and more), it takes every
    range itself, the results come back in order, and the late thread takes none."""
    monkeypatch.setattr(nb, "_pool", ThreadPoolExecutor(max_workers=1))
    with kldiv.options(threads=2, parallel_min=0):
        ranges = nb._row_ranges(40, 10)
        assert len(ranges) == 2 * nb._PIECES_PER_THREAD
        assert [ranges[0][0], ranges[-1][1]] == [0, 40]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        held, done = threading.Event(), threading.Event()
        nb._executor(1).submit(held.wait)  # the pool's one thread, busy
        caller, takers = threading.get_ident(), []

        def job(start: int, stop: int) -> tuple[int, int]:
            takers.append(threading.get_ident())
            if len(takers) == len(ranges):
                done.set()
            return start, stop

        releaser = threading.Thread(target=lambda: done.wait(30) and held.set())
        releaser.start()
        assert nb._run(job, 40, 10) == ranges
        releaser.join()
    assert takers == [caller] * len(ranges)


def test_a_failing_range_stops_the_others_before_run_returns():
    """Whichever thread a range fails on, the others take no more ranges, the error is
    raised, and no range runs after _run returns."""
    started: list[int] = []

    def job(start: int, stop: int) -> None:
        started.append(start)
        if start == 0:
            raise ZeroDivisionError("range 0")
        time.sleep(0.01)

    with kldiv.options(threads=2, parallel_min=0):
        pieces = len(nb._row_ranges(80, 10))
        with pytest.raises(ZeroDivisionError, match="range 0"):
            nb._run(job, 80, 10)
        count = len(started)
        time.sleep(0.05)
    assert len(started) == count
    assert count <= 2 < pieces


@pytest.mark.parametrize("name", [*PROBABILITY_OPS, "rel_entr"])
def test_bad_value_in_a_late_tile_is_found_and_named(tiling, name):
    rng = np.random.default_rng(6)
    arrays = args_for("kl_div", rng, (60, 80), "float64")[: 1 if name == "entropy" else 2]
    arrays[0][47, 33] = -0.01
    with pytest.raises(ValueError, match=r"^p has a negative entry \(-0.01\) at index \(47, 33\)"):
        fast(name, *arrays)


def test_row_off_one_in_a_late_tile(tiling):
    rng = np.random.default_rng(7)
    p, q = args_for("kl_div", rng, (60, 80), "float32")
    q[59] *= 1.001
    with pytest.raises(
        ValueError, match=r"^q is not normalised along axis -1: the row at index 59"
    ):
        kldiv.kl_div(p, q)


def test_infinite_logit_in_a_late_tile(tiling):
    a = np.zeros((60, 80))
    a[58, 2] = np.inf
    with pytest.raises(ValueError, match=r"^b has an infinite entry \(inf\) at index \(58, 2\)"):
        kldiv.kl_div_logits(np.zeros((60, 80)), a)


def test_unchecked_negative_input_gives_nan_not_a_number(tiling):
    p = np.tile([0.5, 0.5], (40, 1))
    q = np.tile([0.5, 0.5], (40, 1))
    p[3] = [-0.5, 1.5]
    q[3] = [-0.5, 1.5]
    got = kldiv.kl_div(p, q, validate=False)
    assert np.isnan(got[3])
    assert np.isfinite(np.delete(got, 3)).all()


@pytest.mark.parametrize("shape", [(4096, 1000), (1_000_000, 10)])
def test_extra_memory_is_a_few_tiles_whatever_the_size(tiling, shape):
    if "small tiles" in tiling:
        pytest.skip("the default tiling is the one measured")
    rng = np.random.default_rng(8)
    p = distributions(rng, shape, "float32")
    q = distributions(rng, shape, "float32")
    kldiv.kl_div(p, q)
    tracemalloc.start()
    try:
        kldiv.kl_div(p, q)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Scratch is a few 512 KiB tiles per worker (NumPy), or nothing (compiled: the kernels
    # write into the output); the output is 4 bytes a row.
    assert peak - 4 * shape[0] < 4 * 2**20, peak


@pytest.mark.parametrize("norm_target", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_agrees_with_generic(tiling, norm_target, dtype):
    rng = np.random.default_rng(9)
    pred = (4 * rng.standard_normal((45, 30))).astype(dtype)
    pred[3, 4] = 300.0  # a gap that underflows the softmax
    if norm_target:
        target = rng.standard_normal((45, 30)).astype(dtype)
    else:
        target = distributions(rng, (45, 30), dtype, zeros=0.4)
        target[10] = 0
        target[10, 7] = 1  # one-hot
    error, grad = nb.softmax_kl_loss(pred, target, norm_target=norm_target, xp=xp_np)
    g_error, g_grad = _agnostic.softmax_kl_loss(pred, target, norm_target=norm_target, xp=xp_np)
    # float32 rows take the compiled kernel's float32 terms (each a few ulps, none negative)
    assert float(error) == pytest.approx(float(g_error), rel=1e-6 if dtype == "float32" else 1e-12)
    assert grad.dtype == np.dtype(dtype)
    # (y - s)/N of float32 y and s: an absolute rounding of a probability (<= 1), over N
    atol = np.finfo(np.float32).eps / len(pred) if dtype == "float32" else 1e-17
    np.testing.assert_allclose(grad, g_grad, rtol=1e-6 if dtype == "float32" else 1e-12, atol=atol)


def test_loss_with_nan_pred_is_nan_unchecked(tiling):
    pred = np.zeros((20, 5))
    pred[13, 2] = np.nan
    target = np.full((20, 5), 0.2)
    error, _ = nb.softmax_kl_loss(pred, target, norm_target=False, xp=xp_np)
    assert np.isnan(float(error))


@pytest.mark.parametrize("name", PROBABILITY_OPS)
def test_a_bad_q_behind_a_zero_p_is_still_found(tiling, name):
    p = np.tile([0.0, 0.5, 0.5], (30, 1))
    q = np.tile([0.2, 0.4, 0.4], (30, 1))
    q[21] = [-0.2, 0.6, 0.6]
    q[22] = [np.nan, 0.5, 0.5]
    arrays = (q,) if name == "entropy" else (p, q)
    bad = "q" if name != "entropy" else "p"
    with pytest.raises(
        ValueError, match=rf"^{bad} has a negative entry \(-0.2\) at index \(21, 0\)"
    ):
        fast(name, *arrays)
    got = fast(name, *arrays, validate=False)
    assert np.isnan(got[21])
    assert np.isnan(got[22])
    assert np.isfinite(np.delete(got, [21, 22])).all()


_FORK_SCRIPT = """
import multiprocessing, sys
import numpy as np
import kldiv

def child(queue):
    p = np.full((600, 1000), 1e-3, dtype=np.float32)
    queue.put(float(kldiv.kl_div(p, p).max()))

p = np.full((600, 1000), 1e-3, dtype=np.float32)
kldiv.kl_div(p, p)  # the parent's pool now has threads
ctx = multiprocessing.get_context("fork")
queue = ctx.Queue()
proc = ctx.Process(target=child, args=(queue,))
proc.start()
proc.join(timeout=60)
if proc.is_alive():
    proc.kill()
    sys.exit("the forked child hung on the parent's thread pool")
sys.exit(proc.exitcode or (queue.get(timeout=5) != 0.0))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_a_pool_of_its_own():
    # In a process of its own: JAX, loaded by other tests, warns on every fork.
    done = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_a_nan_in_one_row_does_not_hide_a_negative_in_another(tiling):
    q = np.full((2, 4), 0.25)
    p = np.array([[0.25, 0.25, -0.5, 1.0], [0.25, np.nan, 0.25, 0.5]])
    got = kldiv.cross_entropy(p, q, validate=False)
    assert np.isnan(got).all()
    got = kldiv.kl_div(q, p, validate=False)
    assert np.isnan(got).all()


def test_js_with_one_side_over_1e16_times_the_other(tiling):
    p = np.tile([0.5, 0.5], (30, 1))
    q = np.tile([1e-20, 1.0], (30, 1))
    expected = generic("js_div", p, q)
    np.testing.assert_allclose(kldiv.js_div(p, q), expected, rtol=1e-13)
    np.testing.assert_allclose(kldiv.js_div(q, p), expected, rtol=1e-13)
    assert expected[0] == pytest.approx(0.2157615543388357, rel=1e-13)


def test_js_with_a_tiny_negative_entry_is_refused_or_nan(tiling):
    p = np.tile([0.5, 0.5], (30, 1))
    p[12] = [-1e-300, 1.0]
    with pytest.raises(ValueError, match=r"^p has a negative entry .* at index \(12, 0\)"):
        kldiv.js_div(p, np.full((30, 2), 0.5))
    assert np.isnan(kldiv.js_div(p, np.full((30, 2), 0.5), validate=False)[12])


def test_rel_entr_is_exact_per_element_far_from_p_equals_q(tiling):
    p = np.array([[1.5e-16, 0.5, 1.0 - 1e-12]] * 20)
    q = np.array([[1.0, 1e-300, 1e-12]] * 20)
    expected = np.asarray(_agnostic.rel_entr(p, q, validate=False, xp=xp_np))
    np.testing.assert_allclose(kldiv.rel_entr(p, q, validate=False), expected, rtol=1e-14)
    assert kldiv.rel_entr(p, q, validate=False)[0, 0] == pytest.approx(
        -5.465384456969485e-15, rel=1e-14
    )


def test_rel_entr_of_two_negatives_is_nan_unchecked(tiling):
    p = np.tile([-0.3, 0.5], (20, 1))
    got = kldiv.rel_entr(p, p, validate=False)
    assert np.isnan(got[:, 0]).all()
    assert (got[:, 1] == 0).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unchecked_measures_on_every_path(tiling, dtype):
    """validate=False on measures of different masses: the compiled kernels hand such rows
    back, and the tiles keep each far entry's p*log(p/q) whole (issue 9, item 1)."""
    from tests.test_funcs import _mp_unnormalised

    rng = np.random.default_rng(5)
    p = (10.0 ** rng.uniform(-18, 18, size=(40, 9))).astype(dtype)
    q = (10.0 ** rng.uniform(-18, 18, size=(40, 9))).astype(dtype)
    p[:, 0] = 0.0
    p[::2] = q[::2] * np.asarray(1 + 1e-4 * rng.standard_normal(q[::2].shape), dtype=dtype)
    got = kldiv.kl_div(p, q, validate=False)
    for row in range(p.shape[0]):
        expected, scale = _mp_unnormalised(p[row], q[row])
        bound = 100 * np.finfo(np.float64).eps * scale + np.finfo(dtype).eps * abs(expected)
        assert abs(got[row] - expected) <= bound, (row, got[row], expected)


# kl_div_logits of rows longer than a tile: streamed by the tiles, or by the compiled kernel


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rows_longer_than_a_tile_are_streamed_exactly(dtype, compiled):
    if compiled and nb._native is None:
        pytest.skip("kldiv._backends.numpy._native is not built")
    rng = np.random.default_rng(11)
    a = (rng.standard_normal((5, 1000)) * 3).astype(dtype)
    b = (rng.standard_normal((5, 1000)) * 3).astype(dtype)
    a[1, :300] = -np.inf  # zero probabilities in p
    b[2] = a[2] + 1e-9  # near-identical: float64 redoes it exactly
    expected = generic("kl_div_logits", a.astype(np.float64), b.astype(np.float64), axis=-1)
    with kldiv.options(tile=256, compiled=compiled):
        got = kldiv.kl_div_logits(a, b)
    rtol = 1e-12 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-30)
    b[3, 7] = -np.inf  # q = 0 < p: infinite
    with kldiv.options(tile=256, compiled=compiled):
        assert np.isinf(kldiv.kl_div_logits(a, b)[3])
        a[4, 9] = np.nan
        with pytest.raises(ValueError, match=r"^a "):
            kldiv.kl_div_logits(a, b)
        assert np.isnan(kldiv.kl_div_logits(a, b, validate=False)[4])


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_vocabulary_sized_rows_take_a_few_mib(dtype, compiled):
    """(16, 131072), 8 or 16 MiB per input: once fell to the generic code (198 MiB). The
    kernel's scratch is three chunks of 256 KiB per worker, the tiles' a few tiles."""
    rng = np.random.default_rng(12)
    a = rng.standard_normal((16, 131072)).astype(dtype)
    b = rng.standard_normal((16, 131072)).astype(dtype)
    with kldiv.options(compiled=compiled):
        kldiv.kl_div_logits(a[:2], b[:2])  # first-call work (thread pool) first
        tracemalloc.start()
        try:
            kldiv.kl_div_logits(a, b)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    limit = 4 if compiled and nb._native is not None else 8
    assert peak < limit * 2**20, f"{peak / 2**20:.1f} MiB"


@pytest.mark.skipif(nb._native is None, reason="kldiv._backends.numpy._native is not built")
@pytest.mark.parametrize("n", [7, 70_000])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logits_of_either_type_and_any_length_run_the_kernel(dtype, n, monkeypatch):
    """float64 and rows over the kernel's chunk reach kl_logit_rows; a row with a -inf
    logit it leaves NaN is redone by the tiles (here, the streaming ones for the long rows)."""
    calls = _record_native(monkeypatch, "kl_logit_rows")
    rng = np.random.default_rng(13)
    a = (3 * rng.standard_normal((3, n))).astype(dtype)
    b = (3 * rng.standard_normal((3, n))).astype(dtype)
    b[1, 2] = -np.inf  # q = 0 < p: +inf
    a[2, :3] = -np.inf  # zeros of p: finite
    got = kldiv.kl_div_logits(a, b)
    assert calls
    expected = generic("kl_div_logits", a.astype(np.float64), b.astype(np.float64), axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-12 if dtype == "float64" else 2e-6)
    assert got.dtype == dtype


def _record_native(monkeypatch, function):
    """The compiled module with ``function``'s calls recorded, as (keywords, result) pairs,
    in place of the NumPy path's for the test."""
    native = nb._native
    calls: list[tuple[dict, object]] = []

    class Recording:
        def __getattr__(self, attr):
            return getattr(native, attr)

    def recorded(*args, **kwargs):
        result = getattr(native, function)(*args, **kwargs)
        calls.append((kwargs, result))
        return result

    recording = Recording()
    setattr(recording, function, recorded)
    monkeypatch.setattr(nb, "_native", recording)
    return calls


COMPILED = {
    "kl_div": "kl",
    "entropy": "entropy",
    "cross_entropy": "cross_entropy",
    "js_div": "js",
    "hellinger": "hellinger",
    "total_variation": "total_variation",
}


@pytest.mark.skipif(nb._native is None, reason="kldiv._backends.numpy._native is not built")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", COMPILED)
def test_each_compiled_reduction_runs_its_kernel(name, dtype, monkeypatch):
    """The reductions with a compiled kernel reach it, with the rows the kernel leaves NaN
    (zeros of q under p > 0, subnormals) redone by the tiles, and the result as the
    reference's."""
    from tests._references import call, inputs

    calls = _record_native(monkeypatch, "kl_rows")
    p, q = (x.astype(dtype) for x in inputs(name, (300, 50)))
    p[0, :2] = [0.0, p[0, 0] + p[0, 1]]  # a zero of p: in every kernel's domain
    q[1, :2] = [0.0, q[1, 0] + q[1, 1]]  # a zero of q: redone for KL and cross entropy
    got = call(name, p, q)
    ops = [kwargs.get("op", "kl") for kwargs, _ in calls]
    assert ops
    assert set(ops) == {COMPILED[name]}
    rtol = 2e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(
        got, _WITH_ZEROS[name](*(x.astype(np.float64) for x in (p, q))), rtol=rtol
    )


# SciPy's forms, which know the zero conventions (tests/_references.py is for positive input)
_WITH_ZEROS = {
    "kl_div": lambda p, q: scipy.special.rel_entr(p, q).sum(-1),
    "entropy": lambda p, q: scipy.special.entr(p).sum(-1),
    "cross_entropy": lambda p, q: -scipy.special.xlogy(p, q).sum(-1),
    "js_div": lambda p, q: scipy.spatial.distance.jensenshannon(p, q, axis=-1) ** 2,
    "hellinger": lambda p, q: np.sqrt(((np.sqrt(p) - np.sqrt(q)) ** 2).sum(-1) / 2),
    "total_variation": lambda p, q: np.abs(p - q).sum(-1) / 2,
}


@pytest.mark.skipif(nb._native is None, reason="kldiv._backends.numpy._native is not built")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rel_entr_runs_its_kernel_and_redoes_what_it_leaves(dtype, monkeypatch):
    calls = _record_native(monkeypatch, "rel_entr_rows")
    rng = np.random.default_rng(4)
    p, q = (distributions(rng, (300, 50), dtype) for _ in range(2))
    p[0, :2] = q[0, :2] = 0.0  # 0/0: left by the kernel, 0 by the convention
    p[1, 0] = np.finfo(dtype).smallest_subnormal  # left by the kernel, redone exactly
    got = kldiv.rel_entr(p, q)
    assert sum(lost for _, lost in calls) == 3
    np.testing.assert_allclose(
        got,
        scipy.special.rel_entr(p.astype(np.float64), q),
        rtol=2e-6 if dtype == "float32" else 1e-14,
        atol=4 * np.finfo(dtype).smallest_subnormal,  # a subnormal result has few digits
    )
    bad = p.copy()
    bad[5, 5] = -0.1
    with pytest.raises(ValueError, match=r"^p has a negative entry"):
        kldiv.rel_entr(bad, q)
