"""The CuPy backend against the NumPy path, without a GPU and with one.

Proof (b), execute: the unchanged kernel sources run on the CPU in ``tests/cuda_sim``, with
real threads, barriers and warp shuffles, under every schedule for the small cases.
Proof (c), drive: the backend's own launcher (kernel choice, launch sizes, argument packing,
output allocation) makes those launches, with NumPy arrays for device memory and a small
made-up device; every launch's arguments are checked against the kernel's declaration, as
CuPy would pass them. Proof (d): the same comparisons on CuPy arrays, on a GPU (``gpu``
marker; skipped without one). Proof (a), compiling for real GPUs, is test_cuda_compile.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import array_api_compat.numpy as np_compat
import mpmath
import numpy as np
import pytest
from cuda_sim import SimModule, assert_all_schedules

import kldiv
from kldiv import _layout
from kldiv._backends import numpy as _numpy_backend
from kldiv._backends.cupy import _launcher, _sources
from kldiv._backends.cupy._launcher import DeviceProperties, Launcher
from tests._references import mp_softmax_kl_rows, naive_softmax_kl_rows

# Small enough that the tests cross every boundary at small sizes: 128-thread blocks (a row
# of 700 is longer than a block), 4 blocks resident (grid-stride loops take the rest of the
# rows), 5 KiB of shared memory, 3 KiB of it past the loss's static buffers (a float32 row
# of 1000 is too long to cache: the loss's two-pass path).
TEST_DEVICE = DeviceProperties(
    multiprocessors=2,
    max_threads_per_block=128,
    max_threads_per_multiprocessor=256,
    shared_memory_per_block=5 * 1024,
)
# Real ones, for the launch sizes alone (an A100's and an H200's figures).
A100 = DeviceProperties(
    multiprocessors=108,
    max_threads_per_block=1024,
    max_threads_per_multiprocessor=2048,
    shared_memory_per_block=48 * 1024,
)
H200 = DeviceProperties(
    multiprocessors=132,
    max_threads_per_block=1024,
    max_threads_per_multiprocessor=2048,
    shared_memory_per_block=48 * 1024,
)

DTYPES = ["float16", "float32", "float64"]
PROBABILITY_OPS = ["kl_div", "entropy", "cross_entropy", "js_div", "hellinger", "total_variation"]
REDUCTIONS = [*PROBABILITY_OPS, "kl_div_logits"]
# Kernels sum float16 and float32 in float32; references are float64.
TOLERANCE = {
    "float16": {"rtol": 2e-3, "atol": 2e-3},
    "float32": {"rtol": 2e-6, "atol": 2e-6},
    "float64": {"rtol": 1e-12, "atol": 1e-13},
}


# ----------------------------------------------------------------- engines


@dataclass
class Launch:
    kernel: str
    grid: tuple[int, ...]
    block: tuple[int, ...]
    shared_mem: int


@dataclass
class CheckedModule:
    """A SimModule as the launcher sees a ``cupy.RawModule``: each launch first has its
    arguments checked against the kernel's declaration (``check_arguments``), is recorded,
    and then runs under the module's schedule."""

    sim: SimModule
    schedule: str
    seed: int
    launches: list[Launch]

    def get_function(self, name):
        kernel = self.sim.get_function(name)

        def launch(grid, block, args, *, shared_mem=0):
            self.sim.check_arguments(name, args)
            self.launches.append(Launch(name, grid, block, shared_mem))
            kernel(grid, block, args, shared_mem=shared_mem, schedule=self.schedule, seed=self.seed)

        return launch


@dataclass
class SimEngine:
    """The launcher on NumPy arrays, its kernels run by the CPU simulator."""

    modules: dict
    device: DeviceProperties = TEST_DEVICE
    schedule: str = "free"
    seed: int = 0
    launches: list[Launch] = field(default_factory=list)

    def launcher(self) -> Launcher:
        def factory(source):
            return CheckedModule(self.modules[source], self.schedule, self.seed, self.launches)

        return Launcher(factory, np, self.device)

    def __call__(self, op, *arrays, **kwargs):
        return getattr(self.launcher(), op)(*arrays, **kwargs)


class GpuEngine:
    """The backend's public functions on CuPy arrays, results brought back to NumPy."""

    def __init__(self):
        import array_api_compat.cupy as cp_compat
        import cupy

        from kldiv._backends import cupy as _cupy_backend

        self.cupy, self.xp, self.backend = cupy, cp_compat, _cupy_backend

    def __call__(self, op, *arrays, **kwargs):
        device_arrays = [self.cupy.asarray(a) for a in arrays]
        out = getattr(self.backend, op)(*device_arrays, xp=self.xp, **kwargs)
        results = out if isinstance(out, tuple) else (out,)
        for result in results:
            assert isinstance(result, self.cupy.ndarray)
            assert result.device == device_arrays[0].device
        numpy_results = tuple(r.get() for r in results)
        return numpy_results if isinstance(out, tuple) else numpy_results[0]


def _gpu_present() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no CuPy, no driver, or no device: all mean no GPU
        return False


@pytest.fixture(scope="module")
def sim_modules():
    if shutil.which("g++") is None:
        pytest.skip("the CUDA simulator compiles kernels with g++, which is not installed")
    return {
        source: SimModule(source, include_dirs=[_sources.KERNEL_DIR], defines=_sources.defines())
        for source in _sources.SOURCES
    }


@pytest.fixture(params=["sim", pytest.param("gpu", marks=pytest.mark.gpu)])
def engine(request):
    if request.param == "gpu":
        if not _gpu_present():
            pytest.skip("no CUDA GPU with CuPy present")
        return GpuEngine()
    return SimEngine(request.getfixturevalue("sim_modules"))


# ----------------------------------------------------------------- data and references


def distributions(rng, shape, dtype, axes=(-1,), zeros=0.0):
    x = rng.uniform(0.01, 1.0, shape)
    if zeros:
        x[rng.uniform(size=shape) < zeros] = 0
    x = x / np.maximum(x.sum(axis=axes, keepdims=True), 1e-300)
    return x.astype(dtype)


def inputs(op, rng, shape, dtype, axes=(-1,), zeros=0.0):
    if op == "kl_div_logits":
        return [(3 * rng.standard_normal(shape)).astype(dtype) for _ in range(2)]
    count = 1 if op == "entropy" else 2
    return [distributions(rng, shape, dtype, axes, zeros) for _ in range(count)]


def numpy_path(op, *arrays, **kwargs):
    """kldiv's NumPy path on float64 copies: the reference every result is held to."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    if op == "softmax_kl_loss":
        error, grad = _numpy_backend.softmax_kl_loss(*arrays, xp=np_compat, **kwargs)
        return float(error), grad
    if op == "rel_entr":
        return kldiv.rel_entr(*arrays, validate=False)
    out = getattr(kldiv, op)(
        *arrays, axis=kwargs["axes"], keepdims=kwargs["keepdims"], validate=False
    )
    # The backend's hellinger is the squared distance; the public layer takes the root.
    return out**2 if op == "hellinger" else out


def assert_matches(got, expected, dtype):
    np.testing.assert_allclose(
        np.asarray(got, dtype=np.float64), expected, equal_nan=True, **TOLERANCE[dtype]
    )


def check_reduction(engine, op, arrays, axes=(1,), keepdims=False):
    got = engine(op, *arrays, axes=axes, keepdims=keepdims, validate=False)
    expected = numpy_path(op, *arrays, axes=axes, keepdims=keepdims)
    dtype = np.result_type(*arrays).name
    assert got.dtype == dtype
    assert got.shape == np.shape(expected)
    assert_matches(got, expected, dtype)
    return got


# ----------------------------------------------------------------- reductions


ROW_SHAPES = {
    "warp rows": (37, 50),  # several rows to a block, more rows than the grid holds
    "block rows": (5, 700),  # a block to a row, each thread several entries
    "one-element rows": (6, 1),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", ROW_SHAPES)
@pytest.mark.parametrize("op", REDUCTIONS)
def test_reductions_match_the_numpy_path(engine, op, rows, dtype):
    arrays = inputs(op, np.random.default_rng(0), ROW_SHAPES[rows], dtype)
    check_reduction(engine, op, arrays)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", PROBABILITY_OPS)
def test_zeros_in_p_and_q(engine, op, dtype):
    arrays = inputs(op, np.random.default_rng(1), (40, 30), dtype, zeros=0.3)
    check_reduction(engine, op, arrays)


@pytest.mark.parametrize("op", PROBABILITY_OPS)
def test_zero_conventions_infinities_and_bad_entries(engine, op):
    p = np.array(
        [
            [0.0, 0.5, 0.5, 0.0],  # p == 0 adds nothing, whatever q
            [0.5, 0.5, 0.0, 0.0],  # p > 0 against q == 0: inf (but finite for JS)
            [0.0, 0.0, 0.0, 0.0],
            [0.25, 0.25, -0.5, 1.0],  # a negative entry: NaN
            [0.25, np.nan, 0.25, 0.5],  # NaN propagates
        ]
    )
    q = np.array(
        [
            [0.0, 0.25, 0.25, 0.5],
            [0.0, 0.5, 0.25, 0.25],
            [0.25, 0.25, 0.25, 0.25],
            [0.25, 0.25, 0.25, 0.25],
            [0.25, 0.25, 0.25, 0.25],
        ]
    )
    # The negative and the NaN row go in separate calls: a NaN in the NumPy path's tile
    # hides a negative entry in another row of the tile from its check.
    for rows in (slice(0, 4), slice(4, 5)):
        arrays = (p[rows],) if op == "entropy" else (p[rows], q[rows])
        got = check_reduction(engine, op, arrays)
        assert np.isnan(got[3:]).all()


def test_near_identical_distributions_keep_their_digits(engine):
    rng = np.random.default_rng(2)
    p = distributions(rng, (8, 200), "float64")
    q = p * (1 + 1e-6 * rng.standard_normal(p.shape))
    q /= q.sum(axis=1, keepdims=True)
    got = engine("kl_div", p, q, axes=(1,), keepdims=False, validate=False)
    # KL is about 1e-13 here: log(p) - log(q) would leave a few correct digits at most.
    np.testing.assert_allclose(got, numpy_path("kl_div", p, q, axes=(1,), keepdims=False), 1e-8)


def test_kl_div_clips_rounding_below_zero_when_validating(engine):
    p = distributions(np.random.default_rng(3), (6, 30), "float64")
    q = p * (1 + 1e-9)  # what a rounding of the sums can do: KL of about -1e-9
    unclipped = engine("kl_div", p, q, axes=(1,), keepdims=False, validate=False)
    assert (unclipped < 0).all()
    assert (engine("kl_div", p, q, axes=(1,), keepdims=False, validate=True) == 0).all()


LAYOUTS = {
    # name: (p's shape or maker, q's, axes, keepdims)
    "q broadcast against a batch": ((9, 50), (50,), (1,), False),
    "p broadcast over one leading axis only": ((3, 1, 20), (3, 4, 20), (2,), False),
    "reduced axis first": ((30, 7), (30, 7), (0,), True),
    "two reduced axes": ((4, 6, 5), (4, 6, 5), (0, 2), True),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", REDUCTIONS)
def test_layouts_and_broadcasting(engine, op, layout):
    p_shape, q_shape, axes, keepdims = LAYOUTS[layout]
    rng = np.random.default_rng(4)
    shapes = (p_shape,) if op == "entropy" else (p_shape, q_shape)
    ndim = max(len(shape) for shape in shapes)
    arrays = [
        # axes count from the broadcast shape's start, a shorter array's from its own
        inputs(op, rng, shape, "float32", tuple(a - (ndim - len(shape)) for a in axes))[0]
        for shape in shapes
    ]
    check_reduction(engine, op, arrays, axes, keepdims)


@pytest.mark.parametrize("op", REDUCTIONS)
def test_non_contiguous_inputs(engine, op):
    rng = np.random.default_rng(5)
    strided = []
    for a in inputs(op, rng, (12, 40), "float64"):
        wide = np.full((12, 80), np.nan)
        wide[:, ::2] = a
        strided.append(wide[:, ::2])  # every other column: rows not contiguous
    reversed_rows = [a[::-1] for a in inputs(op, rng, (12, 40), "float64")]
    column_major = [np.asfortranarray(a) for a in inputs(op, rng, (12, 40), "float64")]
    for arrays in (strided, reversed_rows, column_major):
        check_reduction(engine, op, arrays)


def test_mixed_dtypes_compute_in_the_result_dtype(engine):
    rng = np.random.default_rng(6)
    p = distributions(rng, (5, 40), "float16")
    q = distributions(rng, (5, 40), "float32")
    got = check_reduction(engine, "kl_div", [p, q])
    assert got.dtype == np.float32


# ----------------------------------------------------------------- logits


@pytest.mark.parametrize("dtype", DTYPES)
def test_logit_gaps_of_1e4(engine, dtype):
    a = np.array([[0.0, 1e4], [-1e4, 0.0], [0.0, 0.0], [1e4, -1e4]], dtype=dtype)
    b = np.array([[0.0, 0.0], [0.0, 0.0], [1e4, 0.0], [-1e4, 1e4]], dtype=dtype)
    a = np.pad(a, ((0, 0), (0, 38)), constant_values=-1e4)  # 40 entries, the padding ~0
    b = np.pad(b, ((0, 0), (0, 38)), constant_values=-1e4)
    got = check_reduction(engine, "kl_div_logits", [a, b])
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[0], np.log(2), rtol=TOLERANCE[dtype]["rtol"])


def test_infinite_and_nan_logits(engine):
    inf = np.inf
    a = np.array(
        [
            [-inf, 0.0, 1.0, -inf],  # -inf: zero probabilities
            [0.0, 1.0, 2.0, 3.0],  # b == -inf where a is finite: inf
            [-inf, 1.0, 2.0, 0.0],  # both -inf at the same entry: nothing
            [0.0, np.nan, 1.0, 2.0],
        ]
    )
    b = np.array(
        [
            [0.0, 1.0, -1.0, 2.0],
            [0.0, -inf, 2.0, 3.0],
            [-inf, 0.5, 0.0, 1.0],
            [0.0, 1.0, 1.0, 2.0],
        ]
    )
    got = check_reduction(engine, "kl_div_logits", [a, b])
    assert got[1] == inf
    assert np.isnan(got[3])


# ----------------------------------------------------------------- rel_entr


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("p_shape", "q_shape"),
    [((7, 33), (7, 33)), ((5, 20), (20,)), ((3, 1, 8), (1, 4, 8)), ((), ())],
    ids=["same shape", "q broadcast", "both broadcast", "0-d"],
)
def test_rel_entr(engine, p_shape, q_shape, dtype):
    rng = np.random.default_rng(7)
    p, q = (rng.uniform(0, 1, s).astype(dtype) for s in (p_shape, q_shape))
    if p.ndim:
        p[..., :3] = [0.0, 0.5, 0.2]
        q[..., :3] = [0.0, 0.0, 0.2]
    got = engine("rel_entr", p, q, validate=False)
    expected = numpy_path("rel_entr", p, q)
    assert got.shape == expected.shape
    assert got.dtype == dtype
    assert_matches(got, expected, dtype)


# ----------------------------------------------------------------- the KLDivergence loss

LOSS_SHAPES = {
    "warp rows, cached": (12, 10),
    "block rows, cached": (3, 300),
    "rows too long for shared memory": (3, 1000),
}


@pytest.mark.parametrize("norm_target", [False, True], ids=["target", "softmax target"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", LOSS_SHAPES)
def test_loss_matches_the_numpy_path(engine, rows, dtype, norm_target):
    check_loss(engine, LOSS_SHAPES[rows], dtype, norm_target)


def check_loss(engine, shape, dtype, norm_target):
    rng = np.random.default_rng(8)
    pred = (3 * rng.standard_normal(shape)).astype(dtype)
    if norm_target:
        target = (3 * rng.standard_normal(shape)).astype(dtype)
    else:
        target = distributions(rng, shape, dtype, zeros=0.2)
    error, grad = engine("softmax_kl_loss", pred, target, norm_target=norm_target)
    expected_error, expected_grad = numpy_path(
        "softmax_kl_loss", pred, target, norm_target=norm_target
    )
    assert np.shape(error) == ()
    assert grad.dtype == dtype
    assert grad.shape == shape
    np.testing.assert_allclose(float(error), expected_error, rtol=TOLERANCE[dtype]["rtol"] * 10)
    np.testing.assert_allclose(grad, expected_grad, atol=TOLERANCE[dtype]["atol"] / shape[0])


def test_loss_with_a_logit_gap_of_1e4_is_finite(engine):
    pred = np.array([[0.0, 1e4, -1e4], [5.0, 0.0, 0.0]], dtype=np.float32)
    target = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    error, grad = engine("softmax_kl_loss", pred, target, norm_target=False)
    expected_error, expected_grad = numpy_path("softmax_kl_loss", pred, target, norm_target=False)
    assert np.isfinite(error)
    np.testing.assert_allclose(float(error), expected_error, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-7)


def test_loss_grad_keeps_preds_dtype_with_a_wider_target(engine):
    rng = np.random.default_rng(9)
    pred = rng.standard_normal((4, 16)).astype(np.float32)
    target = distributions(rng, (4, 16), "float64")
    error, grad = engine("softmax_kl_loss", pred, target, norm_target=False)
    assert grad.dtype == np.float32
    expected_error, expected_grad = numpy_path("softmax_kl_loss", pred, target, norm_target=False)
    np.testing.assert_allclose(float(error), expected_error, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-8)


# ----------------------------------------------------------------- every schedule

SCHEDULE_CASES = {
    # name: (operation, shape)
    "kl_div, warp rows": ("kl_div", (9, 40)),
    "kl_div, block rows": ("kl_div", (2, 300)),
    "entropy, block rows": ("entropy", (2, 300)),
    "cross_entropy, warp rows": ("cross_entropy", (9, 40)),
    "js_div, block rows": ("js_div", (2, 300)),
    "kl_div_logits, warp rows": ("kl_div_logits", (9, 40)),
    "kl_div_logits, block rows": ("kl_div_logits", (2, 300)),
    "rel_entr, broadcast": ("rel_entr", (3, 50)),
    "loss, warp rows cached": ("softmax_kl_loss", (9, 20)),
    "loss, block rows cached": ("softmax_kl_loss", (2, 300)),
    "loss, two passes": ("softmax_kl_loss", (2, 1000)),
}


def float32_check(op, expected):
    """A check of a float32 launch's result against the NumPy path's ``expected``."""

    def check(got):
        if op == "softmax_kl_loss":
            np.testing.assert_allclose(float(got[0]), expected[0], rtol=2e-5)
            np.testing.assert_allclose(got[1], expected[1], atol=1e-7)
        else:
            assert_matches(got, expected, "float32")

    return check


@pytest.mark.parametrize("case", SCHEDULE_CASES)
def test_every_schedule_gives_the_numpy_paths_result(sim_modules, case):
    op, shape = SCHEDULE_CASES[case]
    rng = np.random.default_rng(10)
    if op == "softmax_kl_loss":
        arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
        kwargs = {"norm_target": True}
    elif op == "rel_entr":
        arrays = [distributions(rng, shape, "float32"), distributions(rng, shape[1:], "float32")]
        kwargs = {"validate": False}
    else:
        arrays = inputs(op, rng, shape, "float32")
        kwargs = {"axes": (1,), "keepdims": False, "validate": False}
    reference_kwargs = {k: v for k, v in kwargs.items() if k != "validate"}
    expected = numpy_path(op, *arrays, **reference_kwargs)

    def launch(schedule, seed):
        return SimEngine(sim_modules, schedule=schedule, seed=seed)(op, *arrays, **kwargs)

    assert_all_schedules(launch, float32_check(op, expected))


# ----------------------------------------------------------------- launches


def test_each_call_is_one_launch_sized_for_the_device(sim_modules):
    rng = np.random.default_rng(11)
    engine = SimEngine(sim_modules)
    p, q = inputs("kl_div", rng, (37, 50), "float32")
    engine("kl_div", p, q, axes=(1,), keepdims=False, validate=True)
    long_p, long_q = inputs("kl_div", rng, (5, 700), "float32")
    engine("js_div", long_p, long_q, axes=(1,), keepdims=False, validate=True)
    engine("rel_entr", p, q, validate=True)
    engine("softmax_kl_loss", p, q, norm_target=False)
    engine("softmax_kl_loss", long_p, long_q, norm_target=True)
    kernels = [launch.kernel for launch in engine.launches]
    assert kernels == [
        "kl_div_float32",
        "js_div_float32",
        "rel_entr_float32",
        "softmax_kl_loss_float32",
        "softmax_kl_loss_float32",
    ]
    for launch in engine.launches:
        (threads,) = launch.block
        assert threads % 32 == 0
        assert threads <= TEST_DEVICE.max_threads_per_block
        (blocks,) = launch.grid
        resident = TEST_DEVICE.max_threads_per_multiprocessor // threads
        assert 1 <= blocks <= TEST_DEVICE.multiprocessors * resident
        assert launch.shared_mem <= TEST_DEVICE.shared_memory_per_block
    # A short row's loss caches its rows in shared memory; 700 float32 twice do not fit.
    assert engine.launches[3].shared_mem > 0
    assert engine.launches[4].shared_mem == 0


def test_launches_pass_scalars_in_their_c_types(sim_modules, monkeypatch):
    """Were the launcher to pass Python ints (as a Python float would be passed, 8 bytes),
    the argument check would catch it before the kernel misread them."""
    numpy_with_python_scalars = types.SimpleNamespace(int32=int, int64=int, dtype=np.dtype)
    monkeypatch.setattr(_launcher, "np", numpy_with_python_scalars)
    p, q = inputs("kl_div", np.random.default_rng(12), (3, 8), "float32")
    with pytest.raises(TypeError, match=r"'phase'.*Python int"):
        SimEngine(sim_modules)("kl_div", p, q, axes=(1,), keepdims=False, validate=False)


def test_row_plans_for_a_real_device():
    launcher = Launcher(lambda source: None, np, A100)
    short = launcher.row_plan(rows=10_000, n=10)
    assert (short.warp_per_row, short.block, short.grid) == (True, 256, 108 * 8)
    assert launcher.row_plan(rows=3, n=10).grid == 1
    medium = launcher.row_plan(rows=4096, n=1000)
    assert (medium.warp_per_row, medium.block, medium.grid) == (False, 128, 108 * 16)
    long = launcher.row_plan(rows=16, n=10**6)
    assert (long.block, long.grid, long.splits) == (_sources.MAX_BLOCK_THREADS, 16, 1)
    # Split, as the reductions launch it: 16 rows of 10**6 fill the 108 * 4 resident blocks.
    split = launcher.row_plan(rows=16, n=10**6, split=True)
    assert (split.block, split.splits, split.grid) == (_sources.MAX_BLOCK_THREADS, 27, 16 * 27)
    assert split.chunk * (split.splits - 1) < 10**6 <= split.chunk * split.splits
    assert split.chunk % 32 == 0
    # Enough rows to fill the device, or rows too short to pay for a split: whole rows.
    assert launcher.row_plan(rows=432, n=10**6, split=True).splits == 1
    assert launcher.row_plan(rows=16, n=30_000, split=True).splits == 1


def test_split_rows_fill_an_h200():
    """The issue's case: 16 rows of 10**6 used 16 blocks of an H200's 132 multiprocessors."""
    plan = Launcher(lambda source: None, np, H200).row_plan(rows=16, n=10**6, split=True)
    resident = 132 * (2048 // plan.block)
    assert (plan.block, resident) == (512, 528)
    assert (plan.splits, plan.grid) == (33, 528)
    # The scratch of the states, two passes for logits: 66 KiB, well under a MiB.
    assert 2 * 16 * plan.splits * _sources.SLOT_BYTES == 67584


def test_loss_plans_cache_rows_that_fit():
    launcher = Launcher(lambda source: None, np, A100)
    assert launcher.loss_plan(rows=4096, k=1000, row_bytes=8000).shared_mem == 8000
    assert launcher.loss_plan(rows=4096, k=6000, row_bytes=96000).shared_mem == 0
    # Eight 4 KiB warp rows fit in 46 KiB; on the test device (3 KiB) not even one does.
    assert launcher.loss_plan(rows=100, k=256, row_bytes=4096).shared_mem == 8 * 4096
    small = Launcher(lambda source: None, np, TEST_DEVICE)
    assert small.loss_plan(rows=100, k=256, row_bytes=4096).shared_mem == 0
    # Fewer warps to a block when that makes the rows fit: 3 of 1 KiB in 3 KiB.
    plan = small.loss_plan(rows=100, k=128, row_bytes=1024)
    assert (plan.block, plan.shared_mem) == (96, 3 * 1024)


# ----------------------------------------------------------------- layout


def test_rows_are_views_where_one_stride_describes_them():
    x = np.arange(24.0).reshape(4, 6)
    view, stride = _layout.as_rows(x, (4, 6), (1,), np)
    assert np.shares_memory(view, x)
    assert stride == 6
    row = np.arange(6.0)
    view, stride = _layout.as_rows(row, (4, 6), (1,), np)
    assert np.shares_memory(view, row)
    assert stride == 0  # one distribution against a batch: not materialised
    view, stride = _layout.as_rows(x[::-1], (4, 6), (1,), np)
    assert np.shares_memory(view, x)
    assert stride == -6


def test_copies_are_as_small_as_the_layout_allows():
    x = np.arange(24.0).reshape(4, 6)
    view, stride = _layout.as_rows(x, (4, 6), (0,), np)  # reduced axis first: transpose x
    assert not np.shares_memory(view, x)
    assert (view.shape, stride) == ((6, 4), 4)
    np.testing.assert_array_equal(view, x.T)
    column = np.arange(6.0).reshape(3, 1, 2)
    view, stride = _layout.as_rows(column, (3, 4, 2), (2,), np)  # broadcast over axis 1 only
    assert (view.shape, stride) == ((3, 4, 2), 2)
    np.testing.assert_array_equal(view, np.broadcast_to(column, (3, 4, 2)))


# ----------------------------------------------------------------- imports


def test_the_launcher_imports_no_cupy():
    code = (
        "import sys, kldiv._backends.cupy, kldiv._backends.cupy._launcher\n"
        "print('cupy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_the_gpu_benchmark_says_it_cannot_run_without_a_gpu():
    if _gpu_present():
        pytest.skip("a GPU is present: the benchmark would run in full")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120
    )
    assert "nothing can be measured" in out.stdout


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_js_with_one_side_far_below_eps_times_the_other(engine, dtype):
    # s = (p - q)/(p + q) rounds to -1 here: log1p(-1) must not make a finite term infinite
    p = np.tile(np.array([1e-20, 1.0], dtype=dtype), (9, 1))
    q = np.tile(np.array([0.5, 0.5], dtype=dtype), (9, 1))
    got = check_reduction(engine, "js_div", [p, q])
    assert np.isfinite(got).all()
    check_reduction(engine, "js_div", [q, p])


# ----------------------------------------------------------------- split rows


@pytest.fixture
def small_splits(monkeypatch):
    """Rows split at a few hundred entries, so that the test device's 4 resident blocks
    split rows the simulator runs quickly: the production rule, with a smaller minimum."""
    monkeypatch.setattr(_launcher, "SPLIT_MIN_ENTRIES", 64)


SPLIT_SHAPE = (3, 700)  # 2 spans of 352 a row on the test device; 6 spans on a grid of 4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", REDUCTIONS)
def test_split_rows_match_the_numpy_path(sim_modules, small_splits, op, dtype):
    engine = SimEngine(sim_modules)
    arrays = inputs(op, np.random.default_rng(13), SPLIT_SHAPE, dtype)
    check_reduction(engine, op, arrays)
    passes = 2 if op == "kl_div_logits" else 1
    assert len(engine.launches) == passes + 1  # the passes, then the finish
    assert [launch.grid for launch in engine.launches[:passes]] == [(4,)] * passes
    (finish,) = engine.launches[-1].grid
    assert finish == 1


@pytest.mark.parametrize("norm_target", [False, True], ids=["target", "softmax target"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_split_loss_rows_match_the_numpy_path(sim_modules, small_splits, dtype, norm_target):
    engine = SimEngine(sim_modules)
    check_loss(engine, SPLIT_SHAPE, dtype, norm_target)
    assert [launch.grid for launch in engine.launches] == [(4,), (4,), (1,)]
    assert {launch.shared_mem for launch in engine.launches} == {0}  # split rows: no cache


def test_split_rows_keep_the_conventions(sim_modules, small_splits):
    rng = np.random.default_rng(14)
    p, q = distributions(rng, SPLIT_SHAPE, "float64"), distributions(rng, SPLIT_SHAPE, "float64")
    p[0, 600], q[1, 10] = 0.0, 0.0  # p == 0 adds nothing; q == 0 < p gives +inf
    p[2, 400] = np.nan
    got = check_reduction(SimEngine(sim_modules), "kl_div", [p, q])
    assert np.isfinite(got[0])
    assert got[1] == np.inf
    assert np.isnan(got[2])
    a, b = (3 * rng.standard_normal(SPLIT_SHAPE) for _ in range(2))
    a[0, 500], b[1, 600], a[2, 30] = -np.inf, -np.inf, np.nan
    got = check_reduction(SimEngine(sim_modules), "kl_div_logits", [a, b])
    assert np.isfinite(got[0])
    assert got[1] == np.inf
    assert np.isnan(got[2])


@pytest.mark.parametrize("op", ["kl_div", "js_div", "kl_div_logits", "softmax_kl_loss"])
def test_split_rows_are_the_same_under_every_schedule(sim_modules, small_splits, op):
    """Each span's state comes from the same threads in the same order and the finish merges
    them in split order, so every schedule gives the same bits, and the right ones."""
    rng = np.random.default_rng(15)
    if op == "softmax_kl_loss":
        arrays = [rng.standard_normal(SPLIT_SHAPE).astype(np.float32) for _ in range(2)]
        kwargs = {"norm_target": True}
        expected = numpy_path(op, *arrays, **kwargs)
    else:
        arrays = inputs(op, rng, SPLIT_SHAPE, "float32")
        kwargs = {"axes": (1,), "keepdims": False, "validate": False}
        expected = numpy_path(op, *arrays, axes=(1,), keepdims=False)

    def launch(schedule, seed):
        return SimEngine(sim_modules, schedule=schedule, seed=seed)(op, *arrays, **kwargs)

    results = assert_all_schedules(launch, float32_check(op, expected))
    first, *others = results.values()
    for other in others:
        # the loss gives (error, grad), the others an array
        parts = (lambda x: x) if op == "softmax_kl_loss" else (lambda x: (x,))
        for got, want in zip(parts(other), parts(first), strict=True):
            np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------- accuracy against mpmath

mpmath.mp.dps = 50
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}
# The accuracy asked of near-identical rows, relative to the 50-digit value.
NEAR_BOUND = {"float32": 1e-6, "float64": 1e-13}


def near_identical(rng, shape, kl, dtype):
    """Rows p, q with KL about ``kl``: q = p(1 + eps*N(0, 1)), both of mass exactly 1 as
    floats (integers over 2**s, exact in ``dtype``), so that the floats' KL is a divergence."""
    n = shape[1]
    s = 30 if dtype == "float32" else 50
    eps = np.sqrt(2 * kl)
    u = rng.uniform(0.5, 1.5, shape)
    m = np.floor(u / u.sum(axis=1, keepdims=True) * 2**s)
    m[:, -1] += 2**s - m.sum(axis=1)
    k = np.round(eps * m * rng.standard_normal(shape))
    k -= np.round(k.sum(axis=1, keepdims=True) / n)
    k[:, -1] -= k.sum(axis=1)
    p, q = (x / 2**s for x in (m, m + k))
    assert (p.astype(dtype) == p).all()
    assert (q.astype(dtype) == q).all()
    return p.astype(dtype), q.astype(dtype)


def _mp(x):
    return [[mpmath.mpf(float(v)) for v in row] for row in np.asarray(x)]


def mp_divergence(op, p, q):
    """The 50-digit value of ``op`` on the exact floats of each row."""
    out = []
    for pr, qr in zip(_mp(p), _mp(q), strict=True):
        if op == "kl_div":
            terms = [x * mpmath.log(x / y) for x, y in zip(pr, qr, strict=True) if x > 0]
        elif op == "js_div":
            terms = [
                (x * mpmath.log(2 * x / (x + y)) + y * mpmath.log(2 * y / (x + y))) / 2
                for x, y in zip(pr, qr, strict=True)
            ]
        elif op == "hellinger":  # squared, as the backend returns it
            terms = [
                (mpmath.sqrt(x) - mpmath.sqrt(y)) ** 2 / 2 for x, y in zip(pr, qr, strict=True)
            ]
        else:  # kl_div_logits: p and q the softmax of logit rows
            la = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in pr))
            lb = mpmath.log(mpmath.fsum(mpmath.exp(y) for y in qr))
            terms = [
                mpmath.exp(x - la) * ((x - la) - (y - lb)) for x, y in zip(pr, qr, strict=True)
            ]
        out.append(float(mpmath.fsum(terms)))
    return np.array(out)


def naive(op, p, q):
    """The textbook form in the inputs' own dtype, terms of both signs summed."""
    with np.errstate(all="ignore"):
        if op == "kl_div":
            return np.sum(p * np.log(p / q), axis=1)
        if op == "js_div":
            m = (p + q) / 2
            return np.sum(p * np.log(p / m) + q * np.log(q / m), axis=1) / 2
        if op == "hellinger":
            return np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, axis=1) / 2
        la = p - np.log(np.sum(np.exp(p), axis=1, keepdims=True))
        lb = q - np.log(np.sum(np.exp(q), axis=1, keepdims=True))
        return np.sum(np.exp(la) * (la - lb), axis=1)


def cpu_path(op, p, q, validate):
    """kldiv on NumPy arrays (the compiled kernels where built), the accuracy to match."""
    out = np.asarray(getattr(kldiv, op)(p, q, validate=validate), dtype=np.float64)
    return out**2 if op == "hellinger" else out


NEAR_CASES = {
    # name: (operation, validate, KL, shape, split)
    "kl_div 1e-9": ("kl_div", True, 1e-9, (6, 1000), False),
    "kl_div 1e-6": ("kl_div", True, 1e-6, (6, 1000), False),
    "kl_div 1e-9, measures form": ("kl_div", False, 1e-9, (6, 1000), False),
    "kl_div 1e-9, split rows": ("kl_div", True, 1e-9, (2, 2000), True),
    "js_div 1e-9": ("js_div", True, 1e-9, (6, 1000), False),
    "hellinger 1e-9": ("hellinger", True, 1e-9, (6, 1000), False),
    "logits 1e-10": ("kl_div_logits", True, 1e-10, (6, 1000), False),
    "logits 1e-7, shifted by 7": ("kl_div_logits", True, 1e-7, (6, 1000), False),
    "logits 1e-9, split rows": ("kl_div_logits", True, 1e-9, (2, 2000), True),
}


def logit_pair(rng, shape, kl, dtype, shift):
    """Logit rows b = 3*N(0, 1) and a = b + shift + eps*N(0, 1), KL about ``kl``."""
    b = 3 * rng.standard_normal(shape)
    a = b + shift + np.sqrt(2 * kl) * rng.standard_normal(shape)
    return a.astype(dtype), b.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", NEAR_CASES)
def test_near_identical_rows_against_mpmath(engine, monkeypatch, case, dtype):
    """Near-identical rows: the kernels' terms are >= 0 and cancel nothing, so the result is
    exact to the dtype's rounding (1e-6 relative in float32, 1e-13 in float64), never below
    0, as exact as the NumPy path's (within a factor 2 or 4 roundings), and at least 100
    times nearer than the textbook form in the same dtype."""
    op, validate, kl, shape, split = NEAR_CASES[case]
    if split:
        monkeypatch.setattr(_launcher, "SPLIT_MIN_ENTRIES", 256)
    rng = np.random.default_rng(16)
    if op == "kl_div_logits":
        p, q = logit_pair(rng, shape, kl, dtype, shift=7.0 if "shifted" in case else 0.0)
    else:
        p, q = near_identical(rng, shape, kl, dtype)
    reference = mp_divergence(op, p, q)
    assert (reference > kl / 10).all()
    assert (reference < kl * 10).all()
    got = engine(op, p, q, axes=(1,), keepdims=False, validate=validate).astype(np.float64)
    if split and isinstance(engine, SimEngine):
        assert len(engine.launches) > 1  # the rows were split
    error = np.max(np.abs(got - reference) / reference)
    cpu_error = np.max(np.abs(cpu_path(op, p, q, validate) - reference) / reference)
    naive_error = np.max(np.abs(naive(op, p, q) - reference) / reference)
    assert (got >= 0).all()
    assert error <= NEAR_BOUND[dtype], (error, cpu_error)
    assert error <= max(2 * cpu_error, 4 * EPS[dtype]), (error, cpu_error)
    assert 100 * error <= naive_error, (error, naive_error)


LOSS_NEAR_CASES = {
    # name: (norm_target, KL, shape, split)
    "target 1e-9": (False, 1e-9, (6, 1000), False),
    "target 1e-6": (False, 1e-6, (6, 1000), False),
    "target 1e-9, cached rows": (False, 1e-9, (6, 300), False),
    "target 1e-9, split rows": (False, 1e-9, (2, 2000), True),
    "softmax target 1e-10": (True, 1e-10, (6, 1000), False),
    "softmax target 1e-9, split rows": (True, 1e-9, (2, 2000), True),
}


def mp_loss(pred, target, norm_target):
    """The 50-digit error sum of the KLDivergence loss (what the backend returns; the class
    divides it by the rows): the sum of mp_softmax_kl_rows' errors."""
    errors, _ = mp_softmax_kl_rows(pred, target, norm_target)
    return float(mpmath.fsum(errors))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", LOSS_NEAR_CASES)
def test_near_identical_loss_against_mpmath(engine, monkeypatch, case, dtype):
    """The loss of a pred near its target: its terms are s*phi(d) >= 0, d = log(y/s) formed
    in float64 for float32 input (as the NumPy path's float32 kernel forms it), so the error
    is exact to the dtype's rounding against 50 digits, as near as the NumPy path's within a
    factor 2, never below 0, and at least 100 times nearer than the textbook form in the
    same dtype."""
    norm_target, kl, shape, split = LOSS_NEAR_CASES[case]
    if split:
        monkeypatch.setattr(_launcher, "SPLIT_MIN_ENTRIES", 256)
    rng = np.random.default_rng(17)
    if norm_target:
        target, pred = logit_pair(rng, shape, kl, dtype, shift=2.0)
    else:  # target a distribution of mass 1 exactly, pred the logarithm of one near it
        target, q = near_identical(rng, shape, kl, dtype)
        pred = (np.log(q.astype(np.float64)) + 5.0).astype(dtype)
    reference = mp_loss(pred, target, norm_target)
    assert kl / 10 < reference / shape[0] < kl * 10
    error, _ = engine("softmax_kl_loss", pred, target, norm_target=norm_target)
    if split and isinstance(engine, SimEngine):
        assert len(engine.launches) > 1  # the rows were split
    got = float(error)
    cpu_error, _ = kldiv.softmax_kl_loss(pred, target, norm_target=norm_target)
    cpu = abs(float(cpu_error) - reference) / reference
    relative = abs(got - reference) / reference
    naive_error = float(np.sum(naive_softmax_kl_rows(pred, target, norm_target)))
    naive = abs(naive_error - reference) / reference
    assert got >= 0
    assert relative <= NEAR_BOUND[dtype], (relative, cpu)
    assert relative <= max(2 * cpu, 4 * EPS[dtype]), (relative, cpu)
    assert 100 * relative <= naive, (relative, naive)
