"""The compiled row kernels, ``kldiv._backends.numpy._native``, on their own: every CPU
variant against a 50-digit mpmath reference, their domain and its edges, row strides, and
their argument checks.

Through the public functions the kernels are tested with everything else on the NumPy
path (test_numpy_backend.py's ``tiling`` fixture runs them and the pure NumPy tiles).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import mpmath
import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st

import kldiv
from kldiv import _validation as v
from kldiv._backends import numpy as nb
from tests._references import mp_softmax_kl_rows

ROOT = Path(__file__).resolve().parents[1]
# as setup.py hashes them into the build: the C source and its headers, by name
SOURCES = sorted(
    path.relative_to(ROOT).as_posix()
    for path in (ROOT / "kldiv/_backends/numpy").glob("_native*.[ch]")
)

if os.environ.get("KLDIV_REQUIRE_NATIVE") == "1":
    # CI sets this: there the module must have been built, not silently skipped
    assert nb._native is not None, "kldiv._backends.numpy._native was not built"
native = pytest.importorskip(
    "kldiv._backends.numpy._native",
    reason="kldiv._backends.numpy._native is not built (no compiler)",
)

VARIANTS = native.variants()
DTYPES = ["float32", "float64"]
# Relative error of a row's KL, against the condition of the sum it is: sum(t) + |sum(p - q)|
# with t = p*log(p/q) - (p - q) >= 0 (see kldiv/_backends/numpy/_native.c)
LIMITS = {"float32": 1e-6, "float64": 1e-14}


def test_the_build_is_of_these_sources():
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((ROOT / name).read_bytes())
    assert digest.hexdigest() == native.SOURCE_SHA256, (
        "kldiv._backends.numpy._native is stale: rebuild it with `pip install -e .`"
    )


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_the_sources_compile_without_a_warning(tmp_path):
    # setup.py's flags, strict C11, and every warning an error
    command = [
        "gcc", "-std=c11", "-O3", "-fopenmp-simd", "-fno-trapping-math", "-fno-math-errno",
        "-Wall", "-Wextra", "-Wpedantic", "-Wshadow", "-Werror",
        "-fPIC", "-I", sysconfig.get_paths()["include"],
        "-c", str(ROOT / "kldiv/_backends/numpy/_native.c"), "-o", str(tmp_path / "native.o"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_baseline_variant_is_always_there():
    assert VARIANTS[-1] == "baseline"


def reference(p_row, q_row):
    """(KL, its condition: sum(t) + |sum(p - q)|), in 50-digit mpmath on the exact values."""
    with mpmath.workdps(50):
        kl, t_sum, d_sum = mpmath.mpf(0), mpmath.mpf(0), mpmath.mpf(0)
        for x, y in zip(p_row.tolist(), q_row.tolist(), strict=True):
            x, y = mpmath.mpf(x), mpmath.mpf(y)
            term = x * mpmath.log(x / y) if x else mpmath.mpf(0)
            kl += term
            t_sum += term - (x - y)
            d_sum += x - y
        return kl, t_sum + abs(d_sum)


def run(p, q, variant=None, *, tolerance=None, dtype=np.float64):
    out = np.full(p.shape[0], -1.0, dtype)
    off = native.kl_rows(p, q, out, tolerance, variant)
    assert off is (tolerance is not None and off)  # a bool, and False without a tolerance
    return out


def assert_close_to_reference(p, q, out, dtype):
    for row, (p_row, q_row) in enumerate(zip(p, q, strict=True)):
        kl, condition = reference(p_row, q_row)
        diff = abs(mpmath.mpf(float(out[row])) - kl)
        error = diff / condition if condition else diff  # p == q: exactly 0
        assert error <= LIMITS[dtype], (row, float(kl), out[row], float(error))


def rows_of(rng, kind, rows, n, dtype):
    """A (p, q) pair of ``kind``: every regime of the kernels' arithmetic."""
    if kind == "random":
        p, q = rng.uniform(0.01, 1, (2, rows, n))
    elif kind == "near":  # within 1e-5: e == 0, the cancellation-free form
        p = rng.uniform(0.5, 1, (rows, n))
        q = p * (1 + 1e-5 * rng.standard_normal((rows, n)))
    elif kind == "powers of two":  # p and q straddle a power of two: the exponent shift
        base = 2.0 ** rng.integers(-20, 0, (rows, n))
        p = base * (1 + 1e-4 * rng.uniform(0, 1, (rows, n)))
        q = base * (1 - 1e-4 * rng.uniform(0, 1, (rows, n)))
        swap = rng.uniform(size=(rows, n)) < 0.5
        p, q = np.where(swap, q, p), np.where(swap, p, q)
    elif kind == "far":  # ratios over the whole exponent range of float32
        p = 10.0 ** rng.uniform(-35, 0, (rows, n))
        q = 10.0 ** rng.uniform(-35, 0, (rows, n))
    elif kind == "ratio sqrt2":  # both sides of the range reduction's threshold
        q = rng.uniform(0.5, 1, (rows, n))
        p = q * np.sqrt(2) * (1 + 1e-7 * rng.standard_normal((rows, n)))
    elif kind == "zeros in p":
        p, q = rng.uniform(0.01, 1, (2, rows, n))
        p[rng.uniform(size=(rows, n)) < 0.3] = 0
    else:
        raise AssertionError(kind)
    return p.astype(dtype), q.astype(dtype)


KINDS = ["random", "near", "powers of two", "far", "ratio sqrt2", "zeros in p"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 7, 64, 65, 300, 2000])
def test_every_variant_against_mpmath(variant, kind, n, dtype):
    rng = np.random.default_rng([len(kind), n])
    p, q = rows_of(rng, kind, 3 if n > 64 else 40, n, dtype)
    out = run(p, q, variant)
    assert not np.isnan(out).any()
    assert_close_to_reference(p, q, out, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_variants_agree(dtype):
    rng = np.random.default_rng(3)
    p, q = rows_of(rng, "random", 50, 999, dtype)
    results = [run(p, q, variant) for variant in VARIANTS]
    for res in results[1:]:
        np.testing.assert_allclose(res, results[0], rtol=LIMITS[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
# the short-row blocks (float32: transposed 8 columns at a time, a last group of 5, 2 or 8;
# its loads reach past a row's end where the rows around allow), and the long-row chunks
@pytest.mark.parametrize("n", [5, 10, 16, 1000])
def test_row_strides_broadcast_and_gaps(dtype, n):
    rng = np.random.default_rng(4)
    p, q = rows_of(rng, "random", 120, n, dtype)
    dense = run(p, q)
    # row stride 0: the loads may not pass the one row's end, so the blocks are read an entry
    # at a time; the sums are the same
    q_row = np.broadcast_to(q[:1], q.shape)
    np.testing.assert_array_equal(run(p, q_row), run(p, np.ascontiguousarray(q_row)))
    wide = np.zeros((120, n + 3), dtype)
    wide[:, :n] = p  # rows n + 3 apart
    np.testing.assert_array_equal(run(wide[:, :n], q), dense)
    np.testing.assert_array_equal(run(p[::3], q[::3]), dense[::3])
    np.testing.assert_array_equal(run(p[::-1], q[::-1]), dense[::-1])  # a negative stride


def _outside(dtype):
    info = np.finfo(dtype)
    return {
        "q zero": (0.5, 0.0),
        "q subnormal": (0.5, info.smallest_subnormal),
        "q negative": (0.5, -0.5),
        "q NaN": (0.5, np.nan),
        "q inf": (0.5, np.inf),
        "p subnormal": (info.smallest_subnormal, 0.5),
        "p negative": (-0.5, 0.5),
        "p NaN": (np.nan, 0.5),
        "p inf": (np.inf, 0.5),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n", [4, 500])
def test_an_element_outside_the_domain_shows_in_its_row_only(variant, dtype, n):
    for what, (x, y) in _outside(dtype).items():
        p = np.full((6, n), 1 / n, dtype)
        q = np.full((6, n), 1 / n, dtype)
        p[4, n - 1], q[4, n - 1] = x, y
        out = run(p, q, variant)
        assert np.isnan(out[4]), what  # for the caller to redo
        assert (out[[0, 1, 2, 3, 5]] == 0).all(), what  # KL(p || p) is exactly 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_domain_edges_are_inside(dtype):
    info = np.finfo(dtype)
    # the smallest normal and the largest finite number, as p and as q
    p = np.array([[info.tiny, 1.0], [1.0, info.tiny], [0.0, 1.0], [1.0, 1.0]], dtype)
    q = np.array([[1.0, info.tiny], [1.0, info.max], [info.max, 1.0], [info.max, 1.0]], dtype)
    out = run(p, q)
    assert np.isfinite(out).all()
    assert_close_to_reference(p, q, out, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_row_over_the_float_range_is_not_finite_and_redone(dtype):
    # p*log(p/q) = max * 88.7 (float32) or max * 709.8 (float64) overflows the kernel's
    # arithmetic: the row comes back NaN, and the caller redoes it in NumPy, where the true
    # KL is over the range too: inf
    info = np.finfo(dtype)
    p = np.array([[info.max, 1.0]], dtype)
    q = np.array([[1.0, info.max]], dtype)
    assert np.isnan(run(p, q)[0])
    assert kldiv.kl_div(p, q, validate=False)[0] == np.inf


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    exponents=st.lists(
        st.tuples(st.floats(-30, 0), st.floats(-30, 0), st.booleans()), min_size=1, max_size=90
    ),
)
def test_property_any_positive_row_against_mpmath(dtype, exponents):
    p = np.array([[0.0 if zero else 10.0**a for a, _, zero in exponents]], dtype)
    q = np.array([[10.0**b for _, b, _ in exponents]], dtype)
    for variant in VARIANTS:
        assert_close_to_reference(p, q, run(p, q, variant), dtype)


@pytest.mark.parametrize("ones", [1, 39, 2999])
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_tiny_kl_beside_large_entries(dtype, ones):
    """Rows [1, ..., 1, 1e-11] against [1, ..., 1, 1e-12] (what hypothesis found): KL 2.3e-11
    under a mass of up to 3000. The mass difference is the sum of the differences, not
    sum(p) - sum(q), whose rounding (1e-16 of one, 5e-13 of 3000) was 3.8e-6 to 4e-3 of it;
    short rows (one per lane, transposed or not) and chunked ones alike."""
    p = np.ones((9, ones + 1), dtype)
    q = np.ones((9, ones + 1), dtype)
    p[:, -1], q[:, -1] = 1e-11, 1e-12
    for variant in VARIANTS:
        assert_close_to_reference(p, q, run(p, q, variant), dtype)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("p2", "q3"), ValueError, "same shape"),
        (("p1d", "p1d"), ValueError, "same shape"),
        (("p", "q64"), TypeError, "both be float32 or both float64"),
        (("i", "i"), TypeError, "both be float32 or both float64"),
        (("columns", "columns"), ValueError, "contiguous"),
        (("p", "q", "short out"), ValueError, "one element per row"),
        (("p", "q", "2-D out"), ValueError, "1-D float32 or float64"),
        (("p", "q", "int out"), ValueError, "1-D float32 or float64"),
        (("p", "q", "out", -1.0), ValueError, "tolerance must be None or a number >= 0"),
        (("p", "q", "out", "1e-6"), TypeError, "must be real number"),
        (("p", "q", "out", None, "avx-9000"), ValueError, "not one of variants"),
    ],
)
def test_bad_arguments_are_refused(args, error, message):
    p = np.full((4, 6), 1 / 6, np.float32)
    arrays = {
        "p": p,
        "q": p.copy(),
        "q64": p.astype(np.float64),
        "p2": p,
        "q3": np.ones((4, 5), np.float32),
        "p1d": p[0],
        "i": np.ones((4, 6), np.int32),
        "columns": np.asfortranarray(np.ones((4, 6), np.float32)),
        "out": np.empty(4),
        "short out": np.empty(3),
        "2-D out": np.empty((4, 1)),
        "int out": np.empty(4, np.int64),
    }
    call = [arrays.get(a, a) if isinstance(a, str) else a for a in args]
    if len(call) == 2:
        call.append(np.empty(4))
    with pytest.raises(error, match=message):
        native.kl_rows(*call)


def test_a_read_only_out_is_refused():
    p = np.full((2, 3), 1 / 3)
    out = np.empty(2)
    out.flags.writeable = False
    with pytest.raises((BufferError, ValueError)):
        native.kl_rows(p, p, out)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(5)
    p, q = rows_of(rng, "zeros in p", 30, 40, "float32")
    before = p.copy(), q.copy()
    run(p, q)
    np.testing.assert_array_equal(p, before[0])
    np.testing.assert_array_equal(q, before[1])


def test_zero_rows_and_zero_length_rows():
    assert run(np.empty((0, 5)), np.empty((0, 5))).shape == (0,)
    np.testing.assert_array_equal(run(np.empty((2, 0)), np.empty((2, 0))), np.zeros(2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [5, 1000])  # the lanes and the chunks
def test_tolerance_flags_a_row_off_one_and_clips(dtype, n):
    rng = np.random.default_rng(8)
    p, q = (x / x.sum(axis=1, keepdims=True) for x in rows_of(rng, "random", 40, n, "float64"))
    p, q = p.astype(dtype), q.astype(dtype)
    tolerance = 1e-3
    out = np.empty(40)
    assert native.kl_rows(p, q, out, tolerance) is False
    for x in (p, q):
        off = x.copy()
        off[37] *= 1 + 3 * tolerance  # its sum 1.003
        assert native.kl_rows(*((off, q) if x is p else (p, off)), out, tolerance) is True
        assert native.kl_rows(*((off, q) if x is p else (p, off)), out, None) is False
    # a KL below 0, possible only for rows off 1, is clipped with a tolerance and not without
    same = p.copy()
    same[3] = p[3] * (1 - tolerance / 2)  # KL(a p || p) = a log a < 0, within the tolerance
    assert native.kl_rows(same, p, out, tolerance) is False
    assert out[3] == 0
    native.kl_rows(same, p, out)
    assert out[3] < 0


def test_float32_out_is_written_directly():
    rng = np.random.default_rng(9)
    p, q = rows_of(rng, "random", 30, 50, "float32")
    np.testing.assert_array_equal(run(p, q, dtype=np.float32), run(p, q).astype(np.float32))


# --- the kernels' own threads (_native_threads.h) ---------------------------------------------

OPS = ["kl", "entropy", "cross_entropy", "js", "hellinger", "total_variation"]


def rows_with_trouble(dtype, rows, n):
    """Rows of every kind at once: near, far, one off 1 (flagged), one with a zero q under a
    positive p (left NaN), one subnormal; small enough for a test, in many pieces."""
    rng = np.random.default_rng(12)
    p, q = rows_of(rng, "random", rows, n, dtype)
    p[1::4], q[2::4] = q[1::4], p[2::4] * (1 + np.asarray(1e-3, dtype))
    if rows > 7:
        p[3] *= 2
        q[5, 0] = 0
        q[7, 1] = np.finfo(dtype).smallest_subnormal
    return p, q


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "shape", [(2, 3), (9, 1000), (300, 7), (1000, 40), (3001, 10), (40, 70000)]
)
def test_threads_give_every_row_bit_for_bit(op, dtype, shape):
    # the same rows, flags and NaN left to redo on any count of threads: each row is one
    # thread's from its first element to its last, whichever thread takes its piece, and
    # short rows go by lanes or alone as on one thread (pieces start at multiples of 16)
    p, q = rows_with_trouble(dtype, *shape)
    if op == "entropy":
        q = p
    measured = {}
    for threads in (1, 2, 3, 8):
        out = np.full(shape[0], -1.0)
        off = native.kl_rows(p, q, out, 1e-3, op=op, threads=threads)
        measured[threads] = off, out
    off, out = measured[1]
    for threads, (off_t, out_t) in measured.items():
        assert off_t is off, threads
        np.testing.assert_array_equal(out_t, out, err_msg=f"{threads} threads")
    if op in ("kl", "cross_entropy") and shape[0] > 7:
        assert np.isnan(out[5])  # a zero q: the kernels leave the row to redo
    if op == "kl":
        mine = np.full(shape[0], -1.0)
        native.kl_rows(p, q, mine, measures=True, threads=4)
        theirs = np.full(shape[0], -1.0)
        native.kl_rows(p, q, theirs, measures=True)
        np.testing.assert_array_equal(mine, theirs)


def test_threads_must_be_positive():
    p = np.full((4, 6), 1 / 6)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        native.kl_rows(p, p, np.empty(4), threads=0)


def test_threads_called_from_many_threads_at_once():
    # one job at a time holds the workers; the others run theirs alone: every result right
    import concurrent.futures

    rng = np.random.default_rng(13)
    pairs = [rows_of(rng, "random", 64, 3000, "float64") for _ in range(6)]
    expected = [run(p, q) for p, q in pairs]

    def call(i):
        p, q = pairs[i % len(pairs)]
        out = np.empty(p.shape[0])
        native.kl_rows(p, q, out, threads=2)
        return i % len(pairs), out

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for i, out in pool.map(call, range(48)):
            np.testing.assert_array_equal(out, expected[i])


_FORKED_CHILD = """
import os, numpy as np
from kldiv._backends.numpy import _native as native
rng = np.random.default_rng(14)
p, q = rng.uniform(0.01, 1, (2, 256, 4096))  # a million elements: the workers are woken
expected, out = np.empty(256), np.empty(256)
native.kl_rows(p, q, expected)
native.kl_rows(p, q, out, threads=2)  # the parent's workers now exist
pid = os.fork()
if pid == 0:  # the child: exit status 0 only if its threaded calls are right
    ok = True
    for _ in range(3):
        native.kl_rows(p, q, out, threads=2)
        ok = ok and np.array_equal(out, expected)
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
raise SystemExit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_threads_in_a_forked_child():
    # the child has none of the parent's workers: it starts its own. In a process of its own,
    # away from the libraries of other tests that warn on fork (JAX)
    done = subprocess.run([sys.executable, "-c", _FORKED_CHILD], timeout=120, check=False)
    assert done.returncode == 0


# --- the logits kernel ------------------------------------------------------------------------

# KL of two softmaxes: the terms are >= 0, so the error is relative to the KL; and absolute
# for the probabilities under 2**-126 (float32) or 2**-1022 (float64) of a row's largest that
# the kernel flushes to 0: at most that times |log(p/q)| each, |log(p/q)| <= 400 for the
# logits below (within 200 of each other; hypothesis found a float32 row of 1.03e-37 from one
# such term)
LOGITS_LIMIT = {"float32": 1e-6, "float64": 1e-14}
LOGITS_FLOOR = {"float32": 2.0**-126 * 400, "float64": 2.0**-1022 * 400}
LOGIT_DTYPES = ["float32", "float64"]


def logits_reference(a_row, b_row):
    """KL(softmax(a) || softmax(b)) in 50-digit mpmath on the exact float values."""
    with mpmath.workdps(50):
        a = [mpmath.mpf(x) for x in a_row.tolist()]
        b = [mpmath.mpf(x) for x in b_row.tolist()]
        log_za = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in a))
        log_zb = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in b))
        return mpmath.fsum(
            mpmath.exp(x - log_za) * ((x - log_za) - (y - log_zb))
            for x, y in zip(a, b, strict=True)
        )


def run_logits(a, b, variant=None, chunk=None):
    out = np.full(a.shape[0], -1.0)
    native.kl_logit_rows(a, b, out, variant, chunk)
    return out


def assert_logits_close(a, b, out):
    dtype = a.dtype.name
    for row, (a_row, b_row) in enumerate(zip(a, b, strict=True)):
        kl = logits_reference(a_row, b_row)
        diff = abs(mpmath.mpf(float(out[row])) - kl)
        # and 1e-45 for the reference's own rounding at 50 digits (a one-logit row: -7e-52)
        bound = LOGITS_LIMIT[dtype] * abs(kl) + LOGITS_FLOOR[dtype] + 1e-45
        assert diff <= bound, (row, float(kl), out[row], float(diff))


def logits_of(rng, kind, rows, n, dtype="float32"):
    a = 3 * rng.standard_normal((rows, n))
    if kind == "random":
        b = 3 * rng.standard_normal((rows, n))
    elif kind == "near":  # the same softmax but for 1e-3 noise, shifted by a constant
        b = a + 5 + 1e-3 * rng.standard_normal((rows, n))
    elif kind == "wide":  # gaps of hundreds: exponentials underflow to 0
        a, b = 100 * rng.standard_normal((2, rows, n))
    elif kind == "log ratio near 1":  # both forms of the term, and where they meet
        b = a + rng.uniform(-1.5, 1.5, (rows, n))
    elif kind == "large logits":
        a = 1e4 + a
        b = -1e4 + 3 * rng.standard_normal((rows, n))
    else:
        raise AssertionError(kind)
    return a.astype(dtype), b.astype(dtype)


LOGIT_KINDS = ["random", "near", "wide", "log ratio near 1", "large logits"]


@pytest.mark.parametrize("dtype", LOGIT_DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", LOGIT_KINDS)
@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000])
def test_logits_every_variant_against_mpmath(variant, kind, n, dtype):
    rng = np.random.default_rng([len(kind), n])
    a, b = logits_of(rng, kind, 2 if n > 100 else 20, n, dtype)
    out = run_logits(a, b, variant)
    assert np.isfinite(out).all()
    assert (out >= 0).all()
    assert_logits_close(a, b, out)


@pytest.mark.parametrize("dtype", LOGIT_DTYPES)
@pytest.mark.parametrize("kind", ["random", "near", "wide", "large logits"])
@pytest.mark.parametrize("chunk", [1, 3, 16, 39, 40])
def test_logit_rows_in_chunks_against_mpmath(kind, chunk, dtype):
    """Rows longer than a chunk: the exponentials are made again chunk by chunk, and the
    normalisers summed over all of them; the scratch stays three chunks."""
    rng = np.random.default_rng([len(kind), chunk])
    a, b = logits_of(rng, kind, 3, 40, dtype)
    for variant in VARIANTS:
        out = run_logits(a, b, variant, chunk)
        assert (out >= 0).all()
        assert_logits_close(a, b, out)


@pytest.mark.parametrize("dtype", LOGIT_DTYPES)
def test_vocabulary_sized_logit_rows_against_float64(dtype):
    """Rows of 131075 logits, over two default chunks of either type, against SciPy's float64
    log_softmax (exact to 1e-12 for rows this far apart), and the near-identical row that
    would lose its digits there against the kernel's own float64 one chunk at a time."""
    rng = np.random.default_rng(21)
    a, b = logits_of(rng, "random", 2, 131075, dtype)
    la = scipy.special.log_softmax(a.astype(np.float64), axis=1)
    lb = scipy.special.log_softmax(b.astype(np.float64), axis=1)
    expected = np.sum(np.exp(la) * (la - lb), axis=1)
    np.testing.assert_allclose(run_logits(a, b), expected, rtol=LOGITS_LIMIT[dtype])
    a, b = logits_of(rng, "near", 1, 131075, dtype)
    whole = run_logits(a.astype(np.float64), b.astype(np.float64), chunk=131075)
    np.testing.assert_allclose(run_logits(a, b), whole, rtol=LOGITS_LIMIT[dtype])


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(LOGIT_DTYPES),
    st.integers(1, 64),
    st.lists(
        st.tuples(st.floats(-200, 200, width=32), st.floats(-200, 200, width=32)),
        min_size=1,
        max_size=60,
    ),
)
def test_logits_property_any_finite_row_against_mpmath(dtype, chunk, pairs):
    a = np.array([[x for x, _ in pairs]], dtype)
    b = np.array([[y for _, y in pairs]], dtype)
    for variant in VARIANTS:
        assert_logits_close(a, b, run_logits(a, b, variant, chunk))


@pytest.mark.parametrize("dtype", LOGIT_DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("gap", [8.9e-14, 1e-9, 1e-6])
def test_logits_of_near_identical_rows_keep_their_digits(variant, gap, dtype):
    # KL ~ gap**2/8: a ratio of the two normalisers off by a rounding would add its square,
    # 1e-14 (float32) or 1e-32 (float64), and swamp every one of these
    a = np.array([[0.0, 0.0], [1.0, -2.0], [3.0, 3.0 + gap]], dtype)
    b = a.copy()
    b[:, 1] += b.dtype.type(gap)
    assert_logits_close(a, b, run_logits(a, b, variant))


@pytest.mark.parametrize("dtype", LOGIT_DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_a_logit_that_is_not_finite_makes_only_its_row_nan(variant, dtype):
    for bad in (-np.inf, np.inf, np.nan):
        for side in (0, 1):
            a = np.zeros((5, 6), dtype)
            b = np.zeros((5, 6), dtype)
            (a, b)[side][3, 5] = bad
            out = run_logits(a, b, variant)
            assert np.isnan(out[3]), (bad, side)
            assert (out[[0, 1, 2, 4]] == 0).all()


@pytest.mark.parametrize("dtype", LOGIT_DTYPES)
def test_logit_rows_strides(dtype):
    rng = np.random.default_rng(6)
    a, b = logits_of(rng, "random", 40, 30, dtype)
    dense = run_logits(a, b)
    b_row = np.broadcast_to(b[:1], b.shape)
    np.testing.assert_array_equal(run_logits(a, b_row), run_logits(a, np.ascontiguousarray(b_row)))
    np.testing.assert_array_equal(run_logits(a[::4], b[::4]), dense[::4])


@pytest.mark.parametrize(
    ("a", "b", "out", "chunk", "error", "message"),
    [
        (np.zeros((3, 4), np.int32), None, np.empty(3), None, TypeError, "float32 or both"),
        (np.zeros((3, 4)), np.zeros((3, 4), np.float32), np.empty(3), None, TypeError, "both"),
        (np.zeros((3, 4), np.float32), None, np.empty(2), None, ValueError, "one element per"),
        (np.zeros((3, 4), np.float32), None, np.empty(3, np.int32), None, ValueError, "1-D"),
        (np.zeros((4, 3), np.float32).T, None, np.empty(3), None, ValueError, "contiguous"),
        (np.zeros((3, 4)), None, np.empty(3), 0, ValueError, "chunk must be a positive"),
        (np.zeros((3, 4)), None, np.empty(3), 2.5, TypeError, "integer"),
    ],
)
def test_logits_bad_arguments_are_refused(a, b, out, chunk, error, message):
    with pytest.raises(error, match=message):
        native.kl_logit_rows(a, a if b is None else b, out, chunk=chunk)


def measure_reference(p_row, q_row):
    """(sum(p*log(p/q)), sum(|p*log(p/q)|)) in 50-digit mpmath: the value for unchecked
    measures of any mass, and the scale a sum of terms each exact to a rounding is right to."""
    with mpmath.workdps(50):
        terms = [
            mpmath.mpf(x) * mpmath.log(mpmath.mpf(x) / mpmath.mpf(y)) if x else mpmath.mpf(0)
            for x, y in zip(p_row.tolist(), q_row.tolist(), strict=True)
        ]
        return mpmath.fsum(terms), mpmath.fsum(abs(t) for t in terms)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n", [1, 7, 64, 300, 2000])
def test_measures_of_any_mass_against_mpmath(variant, dtype, n):
    """measures=True: a large q under a small p (or the reverse) adds p*log(p/q) whole, never a
    large t for sum(p - q) to cancel (issue 9, item 1), and near-identical entries still split."""
    rng = np.random.default_rng([n, DTYPES.index(dtype)])
    span = 18 if dtype == "float32" else 150
    p = (10.0 ** rng.uniform(-span, span, (24, n))).astype(dtype)
    q = (10.0 ** rng.uniform(-span, span, (24, n))).astype(dtype)
    p[::3] = q[::3] * np.asarray(1 + 1e-6 * rng.standard_normal(q[::3].shape), dtype=dtype)
    p[1::4, ::2] = 0.0
    out = np.full(p.shape[0], -1.0)
    assert native.kl_rows(p, q, out, None, variant, measures=True) is False
    eps = np.finfo(dtype).eps
    for row in range(p.shape[0]):
        kl, scale = measure_reference(p[row], q[row])
        assert abs(mpmath.mpf(float(out[row])) - kl) <= 8 * eps * scale, (row, out[row], kl)


@pytest.mark.parametrize("variant", VARIANTS)
def test_measures_mode_agrees_with_the_split_on_distributions(variant):
    """On distributions both modes compute KL; measures=True for normalised rows is the
    ordinary kernel to a few roundings, and takes its domain edges the same way."""
    rng = np.random.default_rng(4)
    p, q = rng.uniform(0.01, 1, (2, 40, 33))
    p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
    p[0, 0], q[1, 0] = 0.0, 0.0
    plain, measured = np.empty(40), np.empty(40)
    native.kl_rows(p, q, plain, None, variant)
    native.kl_rows(p, q, measured, None, variant, measures=True)
    assert np.isnan(plain[1])
    assert np.isnan(measured[1])
    np.testing.assert_allclose(measured[[0, *range(2, 40)]], plain[[0, *range(2, 40)]], rtol=1e-13)


# The other divergences of the row kernels, kl_rows(op=...): entropy, cross entropy,
# Jensen-Shannon, the squared Hellinger distance and total variation. Their terms are >= 0
# on the rows below (entries <= 1), so the value is its own sum's condition.

OPS = ["entropy", "cross_entropy", "js", "hellinger", "total_variation"]
NO_LOG = ("hellinger", "total_variation")  # no logarithm: every zero and subnormal is in


def op_reference(op, p_row, q_row):
    """``op`` of one row, in 50-digit mpmath on the exact values, by the definitions."""
    with mpmath.workdps(50):
        total = mpmath.mpf(0)
        for x, y in zip(p_row.tolist(), q_row.tolist(), strict=True):
            x, y = mpmath.mpf(x), mpmath.mpf(y)
            if op == "entropy":
                total -= x * mpmath.log(x) if x else 0
            elif op == "cross_entropy":
                total -= x * mpmath.log(y) if x else 0
            elif op == "hellinger":
                total += (mpmath.sqrt(x) - mpmath.sqrt(y)) ** 2 / 2
            elif op == "total_variation":
                total += abs(x - y) / 2
            else:
                m = (x + y) / 2
                total += (
                    (x * mpmath.log(x / m) if x else 0) + (y * mpmath.log(y / m) if y else 0)
                ) / 2
        return total


def run_op(op, p, q, variant=None, *, tolerance=None):
    out = np.full(p.shape[0], -1.0)
    native.kl_rows(p, p if op == "entropy" else q, out, tolerance, variant, op=op)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 7, 65, 300])
@pytest.mark.parametrize("op", OPS)
def test_every_divergence_and_variant_against_mpmath(op, n, kind, variant, dtype):
    rng = np.random.default_rng([n, KINDS.index(kind), OPS.index(op)])
    p, q = rows_of(rng, kind, 20, n, dtype)
    out = run_op(op, p, q, variant)
    for row, (p_row, q_row) in enumerate(zip(p, q, strict=True)):
        value = op_reference(op, p_row, q_row)
        diff = abs(mpmath.mpf(float(out[row])) - value)
        error = diff / value if value else diff
        assert error <= LIMITS[dtype], (row, float(value), out[row], float(error))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_every_divergence_takes_zeros_and_shows_the_rest_of_its_domain(op, dtype):
    """Zeros of p are in every kernel's domain, and zeros of both at once in cross
    entropy's and JS's. A zero q where p > 0 (cross entropy's inf), a subnormal p, a negative
    or NaN entry makes only its row NaN, for the tiles to redo."""
    tiny = np.finfo(dtype).smallest_subnormal
    p = np.full((6, 4), 0.25, dtype)
    q = p.copy()
    p[0, :2], p[0, 2:] = 0, 0.5  # zeros of p
    p[1, :2], q[1, :2], p[1, 2:], q[1, 2:] = 0, 0, 0.5, 0.5  # zeros of both
    p[2, 0] = -0.25
    q[3, 0] = np.nan
    p[4, 0] = tiny
    q[5, 0] = 0  # p > 0 == q
    out = run_op(op, p, q)
    expected = [float(op_reference(op, pr, qr)) for pr, qr in zip(p[:2], q[:2], strict=True)]
    np.testing.assert_allclose(out[:2], expected, rtol=LIMITS[dtype])
    assert np.isnan(out[2])
    assert np.isnan(out[4]) == (op not in NO_LOG)
    assert np.isnan(out[3]) == (op != "entropy")  # entropy reads p only
    assert np.isnan(out[5]) == (op == "cross_entropy")  # elsewhere a zero q is a zero


@pytest.mark.parametrize("op", OPS)
def test_every_divergence_flags_a_row_off_one(op):
    p = np.full((3, 8), 1 / 8)
    p[1] *= 1.01
    out = np.empty(3)
    assert native.kl_rows(p, p, out, 1e-6, op=op) is True
    assert native.kl_rows(p[::2], p[::2], out[:2], 1e-6, op=op) is False


@pytest.mark.parametrize("n", [1000, 100_000])
@pytest.mark.parametrize("op", ["kl", *OPS])
def test_the_check_of_the_mass_tells_rows_half_a_tolerance_apart(op, n):
    """float32 rows off 1 by at most half the tolerance pass, by 1.5 times it are flagged, as
    the exact sums (math.fsum) of their entries say: the kernels' float32 sums of p and q
    within a chunk (all but KL's) keep the check's boundary within a fifth of it."""
    rng = np.random.default_rng([n, len(op)])
    tolerance = v.sum_tolerance(np.float32, n, np)
    p, q = (x / x.sum(axis=1, keepdims=True) for x in rng.exponential(size=(2, 8, n)))
    for row, off in enumerate([0.5, -0.5, 1.5, -1.5]):
        p[row] *= 1 + off * tolerance
        q[7 - row] *= 1 + off * tolerance
    p, q = p.astype(np.float32), q.astype(np.float32)
    q = p if op == "entropy" else q
    exact = [max(abs(math.fsum(x[row].tolist()) - 1) for x in (p, q)) for row in range(8)]
    assert all(e <= 0.55 * tolerance or e >= 1.45 * tolerance for e in exact)  # as built
    for row in range(8):
        chosen = np.zeros(8, bool)
        chosen[row] = True
        flagged = native.kl_rows(p[chosen], q[chosen], np.empty(1), tolerance, op=op)
        assert flagged is (exact[row] > tolerance), (row, exact[row] / tolerance)


def test_an_unknown_op_and_measures_of_another_op_are_refused():
    p = np.full((2, 4), 0.25)
    with pytest.raises(ValueError, match="op 'kl_div' is not one of"):
        native.kl_rows(p, p, np.empty(2), op="kl_div")
    with pytest.raises(ValueError, match="measures=True is for op='kl' only"):
        native.kl_rows(p, p, np.empty(2), measures=True, op="js")


@settings(deadline=None)
@given(
    op=st.sampled_from(OPS),
    dtype=st.sampled_from(DTYPES),
    exponents=st.lists(
        st.tuples(st.floats(-30, 0), st.floats(-30, 0), st.booleans()), min_size=1, max_size=90
    ),
)
def test_property_every_divergence_of_any_row_against_mpmath(op, dtype, exponents):
    p = np.array([[0.0 if zero else 10.0**a for a, _, zero in exponents]], dtype)
    q = np.array([[10.0**b for _, b, _ in exponents]], dtype)
    value = op_reference(op, p[0], q[0])
    for variant in VARIANTS:
        got = mpmath.mpf(float(run_op(op, p, q, variant)[0]))
        error = abs(got - value) / value if value else abs(got - value)
        assert error <= LIMITS[dtype], (variant, float(value), float(got))


# rel_entr_rows: p*log(p/q) elementwise


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", KINDS)
def test_rel_entr_rows_against_mpmath(kind, variant, dtype):
    """Each element exact to a few ulps of its own value (float32: 1e-6, float64: 1e-14)."""
    rng = np.random.default_rng([7, KINDS.index(kind)])
    p, q = rows_of(rng, kind, 6, 40, dtype)
    out = np.full_like(p, -1.0)
    assert native.rel_entr_rows(p, q, out, variant) == 0
    with mpmath.workdps(50):
        for x, y, got in zip(
            p.ravel().tolist(), q.ravel().tolist(), out.ravel().tolist(), strict=True
        ):
            value = mpmath.mpf(x) * mpmath.log(mpmath.mpf(x) / mpmath.mpf(y)) if x else 0
            error = abs(mpmath.mpf(got) - value) / abs(value) if value else abs(got)
            assert error <= LIMITS[dtype], (x, y, got, float(value))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rel_entr_rows_conventions_and_what_is_left_to_redo(dtype):
    info = np.finfo(dtype)
    p = np.array([[0.0, 0.5, 0.5, -0.5, np.nan, np.inf, info.smallest_subnormal, 0.0]], dtype)
    q = np.array([[0.5, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0]], dtype)
    out = np.empty_like(p)
    assert native.rel_entr_rows(p, q, out) == 5
    np.testing.assert_array_equal(out[0, :3], [0.0, np.inf, 0.0])
    assert np.isnan(out[0, 3:]).all()  # bad input, a subnormal, 0/0: the caller's to redo


def test_rel_entr_rows_strides_and_bad_arguments():
    p = np.full((4, 6), 1 / 6)
    q = np.full((6,), 1 / 3)
    out = np.empty((4, 6))
    assert native.rel_entr_rows(p, np.broadcast_to(q, p.shape), out) == 0
    np.testing.assert_allclose(out, p * np.log(p / q), rtol=1e-15)
    with pytest.raises(ValueError, match="of p's shape and dtype"):
        native.rel_entr_rows(p, p, np.empty((4, 6), np.float32))
    with pytest.raises(ValueError, match="of p's shape and dtype"):
        native.rel_entr_rows(p, p, np.empty((6, 4)).T)
    read_only = np.empty((4, 6))
    read_only.flags.writeable = False
    with pytest.raises((BufferError, ValueError)):
        native.rel_entr_rows(p, p, read_only)


# loss_rows: PuzzleLib's KLDivergence, error and grad in one call


def loss_reference(pred, target, norm_target):
    """Per-row errors and the grad (y - s)/N, in float64 from the float32 values."""
    from kldiv import _agnostic, _compat

    pred, target = pred.astype(np.float64), target.astype(np.float64)
    xp = _compat.array_namespace(pred)
    errors = [
        float(_agnostic.softmax_kl_loss(a[None], b[None], norm_target=norm_target, xp=xp)[0])
        for a, b in zip(pred, target, strict=True)
    ]
    _, grad = _agnostic.softmax_kl_loss(pred, target, norm_target=norm_target, xp=xp)
    return np.array(errors), grad


def loss_rows_case(dtype, norm_target, gap):
    """pred and target rows of test_loss_rows_against_the_reference: logits of 257 classes,
    the target near softmax(pred) (a distribution with a zero run) or near pred (scores)."""
    rng = np.random.default_rng([3, gap is None, norm_target])
    pred = 3 * rng.standard_normal((24, 257))
    if norm_target:
        target = pred + (gap or 1.0) * rng.standard_normal(pred.shape)
    else:
        s = scipy.special.softmax(pred, axis=1)
        target = s * (1 + (gap or 0.9) * rng.uniform(-1, 1, s.shape))
        target[0, :20] = 0
        target = target / target.sum(1, keepdims=True)
    return pred.astype(dtype), target.astype(dtype)


_LOSS_MP: dict[tuple[bool, float | None], tuple[np.ndarray, np.ndarray]] = {}


def loss_mp_reference(norm_target, gap):
    """Each row's error and the grad of the float64 loss_rows_case in 50-digit mpmath
    (mp_softmax_kl_rows), rounded to float64, computed once per case."""
    key = (norm_target, gap)
    if key not in _LOSS_MP:
        pred, target = loss_rows_case(np.float64, norm_target, gap)
        errors, grads = mp_softmax_kl_rows(pred, target, norm_target)
        _LOSS_MP[key] = np.array(errors, dtype=np.float64), np.array(grads, dtype=np.float64)
    return _LOSS_MP[key]


@pytest.mark.parametrize("chunk", [None, 7])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("gap", [None, 1e-2, 1e-5])
@pytest.mark.parametrize("norm_target", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_rows_against_the_reference(dtype, norm_target, gap, variant, chunk):
    """float32: errors within 1e-6 of the float64 loss's (near-identical rows included: the
    target's log is taken in float64). float64: within 1e-13 of 50-digit mpmath, and the
    near-identical rows (gap 1e-5, errors about 1e-11) within 1e-10, where the naive
    log_softmax form is 1e-6 off: there what is left is s's own rounding e, which enters the
    terms and the mass they stand for alike and cancels to sum((s - y)*e) (measured 6e-12).
    Grads within a rounding of a probability, over N (float64: 8 of them, of the 50-digit
    grad); rows
    taken whole, or in chunks of 7 (the exponentials made again in the last pass)."""
    pred, target = loss_rows_case(dtype, norm_target, gap)
    grad, errors = np.empty_like(pred), np.empty(len(pred))
    off = native.loss_rows(
        pred, target, grad, errors, 1 / len(pred), norm_target, 1e-5, variant, chunk
    )
    assert off is False
    if dtype == "float32":
        want_errors, want_grad = loss_reference(pred, target, norm_target)
        np.testing.assert_allclose(errors, want_errors, rtol=1e-6, atol=0)
        eps = np.finfo(np.float32).eps
        np.testing.assert_allclose(grad, want_grad, rtol=0, atol=eps / len(pred))
        return
    want_errors, want_grad = loss_mp_reference(norm_target, gap)
    rtol = 1e-10 if gap == 1e-5 and not norm_target else 1e-13
    np.testing.assert_allclose(errors, want_errors, rtol=rtol, atol=0)
    assert (errors >= 0).all()
    # a few roundings of y and s (exp's polynomial, the normaliser, the product): 8 of 1
    np.testing.assert_allclose(
        grad, want_grad, rtol=0, atol=8 * np.finfo(np.float64).eps / len(pred)
    )


def test_loss_rows_leaves_what_it_does_not_take_and_flags_a_target_off_one():
    pred = np.zeros((5, 4), np.float32)
    target = np.full((5, 4), 0.25, np.float32)
    pred[0, 1] = -np.inf  # a masked class: redone by the tiles
    target[1, 2] = -0.25  # bad input
    target[2, 0] = np.finfo(np.float32).smallest_subnormal  # outside the fast domain
    target[3] *= 1.01  # off 1: flagged, still computed
    grad, errors = np.empty_like(pred), np.empty(5)
    assert native.loss_rows(pred, target, grad, errors, 0.2, False, 1e-6) is True
    assert np.isnan(errors[:3]).all()
    assert np.isfinite(errors[3:]).all()
    assert native.loss_rows(pred[3:], target[3:], grad[3:], errors[3:], 0.2, False) is False
    with pytest.raises(TypeError, match="both be float32 or both float64"):
        native.loss_rows(pred, target.astype(np.float64), grad, errors, 1.0, False)
    with pytest.raises(TypeError, match="both be float32 or both float64"):
        native.loss_rows(
            pred.astype(np.float16), target.astype(np.float16), grad, errors, 1.0, False
        )
    with pytest.raises(ValueError, match="grad must be"):
        native.loss_rows(pred, target, np.empty((5, 4)), errors, 1.0, False)
    with pytest.raises(ValueError, match="grad must be"):
        native.loss_rows(
            pred.astype(np.float64), target.astype(np.float64), grad, errors, 1.0, False
        )


def test_float64_loss_rows_redo_an_underflowed_softmax_under_a_target():
    """float64 takes log(y/s) from s itself: where s underflows to 0 (logits 800 apart) under
    a y > 0 the row is left to redo (NaN), under a y == 0 it is computed (its t is s, 0)."""
    pred = np.zeros((2, 3))
    pred[:, 0] = 800.0
    target = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    grad, errors = np.empty_like(pred), np.empty(2)
    assert native.loss_rows(pred, target, grad, errors, 0.5, False, 1e-12) is False
    assert np.isnan(errors[0])
    assert errors[1] == 0.0
    np.testing.assert_array_equal(grad[1], [0.0, 0.0, 0.0])


# loss_label_rows: the loss against integer labels, the one-hot target never made


def label_reference(pred_row, labels_row):
    """sum(y*log(y/s)) of one class-major row against its labels, y = 1/P at each position's
    label, in 50-digit mpmath on the exact float values."""
    positions = len(labels_row)
    with mpmath.workdps(50):
        x = [mpmath.mpf(v) for v in pred_row.tolist()]
        log_z = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in x))
        y = mpmath.mpf(1) / positions
        return mpmath.fsum(
            y * (mpmath.log(y) - (x[int(label) * positions + j] - log_z))
            for j, label in enumerate(labels_row)
        )


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("positions", [1, 6])
@pytest.mark.parametrize("kind", ["random", "confident", "ties", "far apart"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_label_rows_against_mpmath(dtype, kind, positions, variant):
    """Errors within 1e-6 (float32) or 1e-14 (float64) of 50-digit mpmath (a confident row's
    error of 1e-9 included: the normaliser's log is log1p of the exponentials besides the
    largest), grads within a rounding (float64: 8) of (one-hot/P - softmax)/N."""
    rng = np.random.default_rng([len(kind), positions])
    rows, classes = 12, 40
    pred = 3 * rng.standard_normal((rows, classes, positions))
    labels = rng.integers(0, classes, (rows, positions))
    if kind == "confident":  # the label's logit 25 above the rest: s = 1 - 1e-9 or so
        np.put_along_axis(pred, labels[:, None, :], pred.max() + 25, axis=1)
    elif kind == "ties":  # several maxima, the label among them
        pred[:, :3] = pred.max() + 1
        labels[:, :] = 1
    elif kind == "far apart":  # the labels' logits 1600 apart: the largest d's form
        values = np.where(np.arange(positions) % 2, -800.0, 800.0)
        np.put_along_axis(pred, labels[:, None, :], values[None, None, :], axis=1)
    pred = pred.astype(dtype).reshape(rows, -1)
    grad, errors = np.empty_like(pred), np.empty(rows)
    native.loss_label_rows(pred, labels, grad, errors, 1 / rows, variant)
    rtol = 1e-6 if dtype == "float32" else 1e-14
    for r in range(rows):
        expected = label_reference(pred[r], labels[r])
        assert abs(mpmath.mpf(float(errors[r])) - expected) <= rtol * expected, (r, errors[r])
    hits = labels[:, None, :] == np.arange(classes)[:, None]
    y = hits.reshape(rows, -1) / positions
    s = scipy.special.softmax(pred.astype(np.float64), axis=1)
    roundings = 1 if dtype == "float32" else 8
    atol = roundings * np.finfo(dtype).eps / rows
    np.testing.assert_allclose(grad, (y - s) / rows, rtol=0, atol=atol)


def test_loss_label_rows_leaves_what_it_does_not_take():
    pred = np.zeros((5, 8), np.float32)
    labels = np.zeros((5, 2), np.int64)
    pred[0, 1] = -np.inf  # a masked class: redone by the tiles
    pred[1, 3] = np.nan
    labels[2, 1] = 4  # four classes of two positions: out of range
    labels[3, 0] = -1
    grad, errors = np.empty_like(pred), np.empty(5)
    native.loss_label_rows(pred, labels, grad, errors, 0.2)
    assert np.isnan(errors[:4]).all()
    assert errors[4] == pytest.approx(np.log(4))  # uniform over 8: y = 1/2 at two of them
    with pytest.raises(TypeError, match="float32 or float64"):
        native.loss_label_rows(pred.astype(np.float16), labels, grad, errors, 1.0)
    with pytest.raises(TypeError, match="integers"):
        native.loss_label_rows(pred, labels.astype(np.float64), grad, errors, 1.0)
    with pytest.raises(ValueError, match="P dividing"):
        native.loss_label_rows(pred, np.zeros((5, 3), np.int64), grad, errors, 1.0)
    with pytest.raises(ValueError, match="grad must be"):
        native.loss_label_rows(pred, labels, np.empty((5, 8)), errors, 1.0)
    with pytest.raises(ValueError, match="grad must be"):
        native.loss_label_rows(pred.astype(np.float64), labels, grad, errors, 1.0)
    with pytest.raises(ValueError, match="errors must be"):
        native.loss_label_rows(pred, labels, grad, np.empty(5, np.float32), 1.0)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "uint64"])
def test_loss_label_rows_reads_labels_of_every_integer_type(dtype):
    """The labels are read in their own type, no int64 copy: the same errors and grads; an
    unsigned label over int64's range is out of range."""
    rng = np.random.default_rng(41)
    pred = (3 * rng.standard_normal((6, 20))).astype(np.float32)
    labels = rng.integers(0, 10, (6, 2))
    want_grad, want_errors = np.empty_like(pred), np.empty(6)
    native.loss_label_rows(pred, labels, want_grad, want_errors, 1 / 6)
    grad, errors = np.empty_like(pred), np.empty(6)
    native.loss_label_rows(pred, labels.astype(dtype), grad, errors, 1 / 6)
    np.testing.assert_array_equal(errors, want_errors)
    np.testing.assert_array_equal(grad, want_grad)
    if dtype == "uint64":
        huge = labels.astype(dtype)
        huge[3, 1] = np.uint64(2**63 + 1)
        native.loss_label_rows(pred, huge, grad, errors, 1 / 6)
        assert np.isnan(errors[3])
        assert np.isfinite(np.delete(errors, 3)).all()


# --- the other kernels on threads: every row, grad and count the same on any thread count


def _on_threads(call):
    """``call(threads)``'s outputs (a tuple of arrays and values) for 1, 2, 3 and 8 threads,
    asserted equal bit for bit to those of one thread; returns those."""
    first = call(1)
    for threads in (2, 3, 8):
        for mine, theirs in zip(call(threads), first, strict=True):
            np.testing.assert_array_equal(mine, theirs, err_msg=f"{threads} threads")
    return first


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "n", "chunk"), [(3, 5, None), (40, 3000, None), (9, 5000, 1024)])
def test_logits_and_loss_on_threads(dtype, rows, n, chunk):
    rng = np.random.default_rng([rows, n])
    a, b = (3 * rng.standard_normal((rows, n))).astype(dtype), rng.standard_normal((rows, n))
    b = b.astype(dtype)
    a[rows // 2, 1] = -np.inf  # a row left to redo (NaN) among the others
    target = rng.exponential(size=(rows, n))
    target = (target / target.sum(1, keepdims=True)).astype(dtype)
    target[-1] *= 1.01  # off 1: flagged

    def logits(threads):
        out = np.full(rows, -1.0)
        native.kl_logit_rows(a, b, out, chunk=chunk, threads=threads)
        return (out,)

    (out,) = _on_threads(logits)
    assert np.isnan(out[rows // 2])
    assert np.isfinite(np.delete(out, rows // 2)).all()
    for norm_target, y in ((False, target), (True, b)):

        def loss(threads, norm_target=norm_target, y=y):
            grad, errors = np.zeros_like(a), np.full(rows, -1.0)
            off = native.loss_rows(
                a, y, grad, errors, 1 / rows, norm_target, 1e-3, chunk=chunk, threads=threads
            )
            grad[np.isnan(errors)] = 0  # a row to redo: its grad is not written
            return grad, errors, off

        _, errors, off = _on_threads(loss)
        assert np.isnan(errors[rows // 2])
        assert off is (not norm_target)  # the last target is off 1 by 1%


@pytest.mark.parametrize("dtype", DTYPES)
def test_label_loss_and_rel_entr_on_threads(dtype):
    rng = np.random.default_rng(15)
    rows, classes, positions = 50, 300, 4
    pred = rng.standard_normal((rows, classes * positions)).astype(dtype)
    labels = rng.integers(0, classes, (rows, positions))
    labels[7, 2] = classes  # out of range: NaN

    def label_loss(threads):
        grad, errors = np.zeros_like(pred), np.full(rows, -1.0)
        native.loss_label_rows(pred, labels, grad, errors, 1 / rows, threads=threads)
        grad[np.isnan(errors)] = 0
        return grad, errors

    _, errors = _on_threads(label_loss)
    assert np.isnan(errors[7])
    assert np.isfinite(np.delete(errors, 7)).all()
    p, q = rows_of(rng, "zeros in p", rows, 2000, dtype)
    q[3, 5] = 0  # p > 0 == q: inf; and a subnormal left to redo
    q[9, 1] = np.finfo(dtype).smallest_subnormal

    def rel_entr(threads):
        out = np.empty_like(p)
        lost = native.rel_entr_rows(p, q, out, threads=threads)
        return np.nan_to_num(out, nan=-1.0), lost

    _, lost = _on_threads(rel_entr)
    assert lost >= 1


@pytest.mark.parametrize(
    "call",
    [
        lambda x, out: native.kl_logit_rows(x, x, out, threads=0),
        lambda x, out: native.loss_rows(x, x, np.empty_like(x), out, 1.0, False, threads=0),
        lambda x, out: native.rel_entr_rows(x, x, np.empty_like(x), threads=-1),
        lambda x, out: native.loss_label_rows(
            x, np.zeros((4, 1), np.int64), np.empty_like(x), out, 1.0, threads=0
        ),
    ],
)
def test_every_kernel_refuses_threads_below_one(call):
    with pytest.raises(ValueError, match="threads must be at least 1"):
        call(np.full((4, 6), 1 / 6), np.empty(4))
