"""Tests of tests/cuda_sim, the harness that runs the project's CUDA C kernels on the CPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from cuda_sim import (
    SCHEDULES,
    SimLaunchError,
    SimModule,
    assert_all_schedules,
    check_arguments,
    parse_signatures,
    run_schedules,
)

KERNELS = Path(__file__).parent / "cuda_sim" / "kernels"


def _build(source, **kwargs) -> SimModule:
    if shutil.which("g++") is None:
        pytest.skip("the CUDA simulator compiles kernels with g++, which is not installed")
    return SimModule(source, **kwargs)


@pytest.fixture(scope="module")
def reduce_cu() -> SimModule:
    return _build(KERNELS / "reduce.cu")


@pytest.fixture(scope="module")
def memory_cu() -> SimModule:
    return _build(KERNELS / "memory.cu")


@pytest.fixture(scope="module")
def sync_cu() -> SimModule:
    return _build(KERNELS / "sync.cu")


@pytest.fixture(scope="module")
def types_cu() -> SimModule:
    return _build(KERNELS / "types.cu")


def _row_sum_launcher(module, kernel, x, grid, block=96):
    rows, cols = x.shape

    def launch(schedule, seed):
        out = np.full(rows, -1.0, np.float32)
        args = (x, out, rows, cols)
        module.get_function(kernel)(
            (grid,), (block,), args, shared_mem=32 * 4, schedule=schedule, seed=seed
        )
        return out

    return launch


def _close_to(expected):
    def check(out):
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)

    return check


# ----------------------------------------------------------------- reductions


@pytest.mark.parametrize("kernel", ["row_sum", "row_sum_extern_shared", "row_sum_macro_shared"])
@pytest.mark.parametrize("grid", [2, 7], ids=["fewer-blocks-than-rows", "more-blocks-than-rows"])
def test_block_reduction_is_right_under_every_schedule(reduce_cu, kernel, grid):
    x = np.random.default_rng(0).standard_normal((5, 300)).astype(np.float32)
    launch = _row_sum_launcher(reduce_cu, kernel, x, grid)
    results = assert_all_schedules(launch, _close_to(x.sum(axis=1, dtype=np.float64)))
    assert set(results) == {"free", "forward", "reverse", "random(seed=0)", "random(seed=1)"}


def test_missing_syncthreads_is_detected(reduce_cu):
    x = np.random.default_rng(1).standard_normal((3, 200)).astype(np.float32)
    expected = x.sum(axis=1, dtype=np.float64)
    launch = _row_sum_launcher(reduce_cu, "row_sum_racy", x, grid=3)
    right = {
        label: np.allclose(out, expected, rtol=1e-5, atol=1e-4)
        for label, out in run_schedules(launch).items()
    }
    # Reverse order lets the other warps write their sums before warp 0 reads them,
    # forward order makes warp 0 read first: the race shows in one and not the other.
    assert right["reverse"]
    assert not right["forward"]
    with pytest.raises(AssertionError, match="forward"):
        assert_all_schedules(launch, _close_to(expected))


# ----------------------------------------------------------------- shared memory and atomics


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_unwritten_shared_memory_reads_the_poison_in_every_block(memory_cu, schedule):
    blocks, threads = 3, 64
    outs = [np.zeros(blocks * threads, t) for t in (np.float32, np.float64, np.float32, np.float32)]
    memory_cu.get_function("read_unwritten_shared")(
        (blocks,), (threads,), tuple(outs), shared_mem=threads * 4, schedule=schedule
    )
    static, double, dynamic, template = outs
    for out in (static, dynamic, template):
        assert (out.view(np.uint32) == 0xFFFFFFFF).all()
    assert (double.view(np.uint64) == 0xFFFFFFFFFFFFFFFF).all()
    assert np.isnan(static).all()
    assert np.isnan(double).all()


@pytest.mark.parametrize("schedule", ["free", "random"])
def test_atomics_from_many_threads_count_exactly(memory_cu, schedule):
    blocks, threads = 4, 256
    n = blocks * threads
    counters = [np.zeros(1, t) for t in (np.int32, np.uint32, np.uint64, np.float32, np.float64)]
    tickets = np.full(n, -1, np.int32)
    memory_cu.get_function("count")((blocks,), (threads,), (*counters, tickets), schedule=schedule)
    assert [c[0] for c in counters] == [n, 2 * n, 3 * n, n, n / 2]
    assert sorted(tickets) == list(range(n))  # every thread got a ticket of its own


# ----------------------------------------------------------------- schedules and synchronisation


def _record_order(sync_cu, schedule, seed=0, threads=64):
    first, second, gaps = (np.full(threads, -1, np.int32) for _ in range(3))
    args = (first, second, gaps, np.zeros(3, np.int32))
    sync_cu.get_function("record_order")(1, threads, args, schedule=schedule, seed=seed)
    return first, second, gaps


def test_serial_schedules_run_one_thread_at_a_time_in_their_order(sync_cu):
    ids = np.arange(64)
    for schedule, order in (("forward", ids), ("reverse", ids[::-1])):
        first, second, gaps = _record_order(sync_cu, schedule)
        assert (first == order).all()
        assert (second == order).all()
        assert (gaps == 1).all()  # no other thread ran between a thread's two atomicAdds

    first, second, gaps = _record_order(sync_cu, "random", seed=5)
    assert sorted(first) == sorted(second) == list(ids)
    assert (gaps == 1).all()
    assert not (first == ids).all()
    assert not (first == ids[::-1]).all()
    assert not (first == second).all()  # each phase is shuffled afresh
    again = _record_order(sync_cu, "random", seed=5)
    assert all((a == b).all() for a, b in zip(again, (first, second, gaps), strict=True))
    assert not (_record_order(sync_cu, "random", seed=6)[0] == first).all()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_deadlock_is_reported_not_hung(sync_cu, schedule):
    with pytest.raises(SimLaunchError, match="deadlock"):
        sync_cu.get_function("deadlock")(1, 64, (np.zeros(64, np.float32),), schedule=schedule)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_returned_threads_do_not_hold_up_syncthreads(sync_cu, schedule):
    out = np.full(64, -1.0, np.float32)
    sync_cu.get_function("early_return")(1, 64, (out, np.int32(40)), schedule=schedule)
    assert (out[:40] == np.arange(40)[::-1]).all()
    assert (out[40:] == -1).all()


def _expected_shuffles(n, width):
    """The CUDA C Programming Guide's definitions; a lane past the end of the block gives NaN."""
    rows = np.full((5, n), np.nan, np.float32)
    for t in range(n):
        lane, warp_base = t % 32, t - t % 32
        segment = lane - lane % width
        xor = lane ^ 5
        sources = [
            segment + (3 & (width - 1)),
            lane - 2 if lane % width >= 2 else lane,
            lane + 2 if lane % width + 2 < width else lane,
            lane if xor >= segment + width else xor,
        ]
        for k, src in enumerate(sources):
            if warp_base + src < n:
                rows[k, t] = warp_base + src
        rows[4, t] = warp_base + (lane ^ 1) if lane < 16 else -1
    return rows


@pytest.mark.parametrize("width", [32, 8])
@pytest.mark.parametrize("schedule", ["free", "random"])
def test_warp_shuffles_follow_cuda_definitions(sync_cu, width, schedule):
    n = 40  # the second warp has 8 lanes
    out = np.zeros(5 * n, np.float32)
    sync_cu.get_function("shuffles")(1, n, (out, np.int32(width)), schedule=schedule)
    np.testing.assert_array_equal(out.reshape(5, n), _expected_shuffles(n, width))


# ----------------------------------------------------------------- launch configuration


def test_launch_limits(reduce_cu):
    kernel = reduce_cu.get_function("row_sum_extern_shared")
    x = np.ones((1, 10), np.float32)
    out = np.zeros(1, np.float32)
    # At the limits themselves the launch runs.
    kernel(1, 1024, (x, out, 1, 10), shared_mem=48 * 1024, schedule="forward")
    assert out[0] == 10
    with pytest.raises(SimLaunchError, match="1025 threads"):
        kernel(1, 1025, (x, out, 1, 10))
    with pytest.raises(SimLaunchError, match="2048 threads"):
        kernel(1, (32, 32, 2), (x, out, 1, 10))
    with pytest.raises(SimLaunchError, match="shared_mem"):
        kernel(1, 32, (x, out, 1, 10), shared_mem=48 * 1024 + 1)
    with pytest.raises(SimLaunchError, match="takes 4 arguments, got 3"):
        kernel(1, 32, (x, out, 1))


# ----------------------------------------------------------------- argument marshalling


def test_python_float_for_a_float_parameter_is_misread_as_cupy_does(types_cu):
    x = np.arange(1, 9, dtype=np.float32)
    y = np.full_like(x, np.nan)
    types_cu.get_function("scale")(1, 32, (x, y, x.size, 1.5))
    # CuPy stores 1.5 as a double (0x3FF8000000000000); the float reads its low 4 bytes.
    assert (y == 0).all()
    types_cu.get_function("scale")(1, 32, (x, y, x.size, np.float32(1.5)))
    assert (y == x * 1.5).all()


def test_narrower_scalar_for_a_wider_parameter_reads_garbage(types_cu):
    x = np.arange(1, 9, dtype=np.float64)
    y = np.zeros_like(x)
    types_cu.get_function("scale_double")(1, 32, (x, y, x.size, np.float32(1.5)))
    assert np.isnan(y).all()


def test_python_int_for_an_int_parameter_keeps_only_the_low_bytes(types_cu):
    x = np.arange(1, 9, dtype=np.float32)
    y = np.zeros_like(x)
    types_cu.get_function("scale_int_n")(1, 32, (x, y, 2**32 + 3, np.float32(2)))
    assert (y[:3] == 2 * x[:3]).all()
    assert (y[3:] == 0).all()


def test_float16_in_and_out_through_half(types_cu):
    x = np.linspace(-4, 4, 301).astype(np.float16)
    y = np.zeros_like(x)
    args = (x, y, np.float32(1.7), np.float32(-0.3), x.size)
    types_cu.get_function("half_affine")(2, 64, args)
    expected = (x.astype(np.float32) * np.float32(1.7) + np.float32(-0.3)).astype(np.float16)
    np.testing.assert_array_equal(y, expected)


def test_device_math(types_cu):
    n = 50
    x = np.linspace(0.05, 0.95, n).astype(np.float32)
    xd = x.astype(np.float64)
    out_f = np.zeros((14, n), np.float32)
    out_d = np.zeros((7, n), np.float64)
    types_cu.get_function("device_math")(1, 64, (x, xd, out_f, out_d, n))
    low, high = np.minimum(x, 0.5), np.maximum(x, 0.5)
    log, exp = np.log(x), np.exp(x)
    f = [log, exp, np.log1p(x), np.arctanh(x), high, low, x, exp, log, 1 / np.sqrt(x), low, high]
    d = [np.log(xd), np.exp(xd), np.log1p(xd), np.expm1(xd), np.arctanh(xd), xd]
    np.testing.assert_allclose(out_f, np.array([*f, log, exp], np.float32), rtol=2e-7)
    np.testing.assert_allclose(out_d, np.array([*d, np.maximum(xd, 0.5)]), rtol=1e-15)
    flags = np.zeros(1, np.int32)
    types_cu.get_function("special_values")(1, 1, (flags,))
    assert flags[0] == 0x1FF


# ----------------------------------------------------------------- signature checks

_ARGS = {
    "x": np.zeros(4, np.float32),
    "x64": np.zeros(4, np.float64),
    "y": np.zeros(4, np.float32),
    "n": 4,
    "1": 1,
    "1.5": 1.5,
    "f32": np.float32(1.5),
    "f64": np.float64(1.5),
}


@pytest.mark.parametrize(
    ("kernel", "args", "message"),
    [
        ("scale", "x y n 1.5", r"argument 3 'factor'.*Python float.*float64.*float \(4 bytes\)"),
        ("scale_int_n", "x y n f32", r"argument 2 'n'.*Python int.*int64.*int \(4 bytes\)"),
        ("scale", "x y n f64", r"'factor'.*NumPy scalar.*float64"),
        ("scale", "x64 y n f32", r"argument 0 'x'.*float64.*float32"),
        ("scale", "x y x f32", r"'n'.*ndarray for a scalar"),
        ("scale", "x 1 n f32", r"'y'.*expected a device array"),
        ("scale", "x y n", r"takes 4 arguments \(const float\* x, float\* y, long long n, "),
    ],
)
def test_check_arguments_rejects_what_cupy_would_misread(types_cu, kernel, args, message):
    with pytest.raises(TypeError, match=message):
        types_cu.check_arguments(kernel, [_ARGS[a] for a in args.split()])


def test_check_arguments_accepts_matching_arguments(types_cu):
    x, x64, x16 = (np.zeros(4, t) for t in (np.float32, np.float64, np.float16))
    types_cu.check_arguments("scale", (x, x, 4, np.float32(2)))
    types_cu.check_arguments("scale", (x, None, np.int64(4), np.float32(2)))
    types_cu.check_arguments("scale_int_n", (x, x, np.int32(4), np.float32(2)))
    types_cu.check_arguments("scale_double", (x64, x64, 4, 2.0))
    types_cu.check_arguments("half_affine", (x16, x16, np.float32(1), np.float32(0), 4))


def test_signature_parsing_without_building():
    code = """
        // extern "C" __global__ void commented_out(int x) {}
        extern "C" __global__ void __launch_bounds__(256)
        k(const float* __restrict__ p, unsigned long long int count, const __half *h, double,
          bool flag) {}
        template <typename T> __global__ void t(T* p, T v) {}
    """
    sigs = parse_signatures(code)
    assert set(sigs) == {"k", "t"}
    assert sigs["k"].extern_c
    assert not sigs["t"].extern_c
    assert [(p.name, p.ctype, p.pointer) for p in sigs["k"].params] == [
        ("p", "float", 1),
        ("count", "unsigned long long", 0),
        ("h", "__half", 1),
        ("arg3", "double", 0),
        ("flag", "bool", 0),
    ]
    assert str(sigs["k"].params[0]) == "const float* __restrict__ p"
    p, h = np.zeros(1, np.float32), np.zeros(1, np.float16)
    check_arguments(sigs["k"], (p, 2**64 - 1, h, 1.0, True))
    with pytest.raises(TypeError, match="out of range"):
        check_arguments(sigs["k"], (p, -1, h, 1.0, True))
    with pytest.raises(TypeError, match="'flag'"):
        check_arguments(sigs["k"], (p, 1, h, 1.0, 1))
    check_arguments(sigs["t"], (np.zeros(1, np.int8), 3))  # template parameters are not checked


# ----------------------------------------------------------------- module from code


def test_code_string_with_includes_defines_and_templates(tmp_path):
    (tmp_path / "project.h").write_text("#define TWICE(v) (2 * (v))\n")
    code = """
        #include "project.h"
        #if KLDIV_CUDA_SIM != 1
        #error "the harness must define KLDIV_CUDA_SIM"
        #endif
        template <typename T>
        __global__ void axpy(T a, const T* x, T* y, long long n) {
            const long long i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) y[i] = TWICE(a * x[i]) + y[i] + OFFSET;
        }
    """
    module = _build(
        code,
        include_dirs=[tmp_path],
        defines=["OFFSET=1"],
        name_expressions=["axpy<float>", "axpy<double>"],
    )
    for ctype, dtype in (("float", np.float32), ("double", np.float64)):
        x = np.arange(10, dtype=dtype)
        y = np.ones(10, dtype)
        module.get_function(f"axpy<{ctype}>")(1, 32, (dtype(3), x, y, 10))
        np.testing.assert_array_equal(y, 6 * x + 2)
    with pytest.raises(KeyError, match="no kernel 'axpy'"):
        module.get_function("axpy")
