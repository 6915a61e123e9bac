"""Kernel choice, launch sizes, argument packing and output allocation for the CuPy backend.

A :class:`Launcher` is given where its kernels come from, which array library allocates, and
what the device can do. In production those are ``cupy.RawModule``, ``cupy`` and the current
GPU (see :mod:`kldiv._backends.cupy._device`); the tests pass a module built by the CPU
simulator in ``tests/cuda_sim``, ``numpy`` and a small made-up device, and run this same code.

Every scalar argument is wrapped in the NumPy type of its C parameter: CuPy passes a Python
``int`` as 8 bytes and a Python ``float`` as a double, whatever the kernel declares.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kldiv import _layout
from kldiv._backends.cupy import _sources
from kldiv._table import DIVERGENCES
from kldiv._typing import Array, Namespace

WARP_SIZE = 32
# Rows up to this long get one warp each, several rows to a block: a whole block on a short
# row would leave most of its threads idle. At this length a lane sums 8 entries.
WARP_ROW_MAX = 256
# Threads of a block of warp-per-row rows (8 rows), and of an elementwise (rel_entr) block.
ROWS_BLOCK_THREADS = 256
# A block-per-row block gets one thread per this many entries of the row (up to the largest
# block), so that a row just past WARP_ROW_MAX is not spread over idle threads.
ENTRIES_PER_THREAD = 8
# Shared memory a launch may use without opting in to more, on every GPU since Kepler.
LAUNCH_SHARED_MEMORY = 48 * 1024
# The loss kernel's static shared memory (per-warp states of its four reductions) stays under
# this (ptxas reports 1664 bytes for float64); the rest of the launch's shared memory can
# cache rows.
LOSS_STATIC_SHARED = 2048
# A row is split across blocks only while the rows are too few to fill the device with a block
# each, and never into spans of fewer entries than this: a split costs a scratch slot per span
# and a finish launch, worth it only for a span that takes a block a while.
SPLIT_MIN_ENTRIES = 16384
# Threads of a block of the finish launch of split rows (one thread to a row).
FINISH_BLOCK_THREADS = 256
# Passes over a split row before its finish, by operation: one for the sums of terms, two
# for logits (their norms, then their terms; see kernels/log_sum_exp.cuh); the loss takes
# two as well (kernels/loss.cu).
PASSES = {"kl_div_logits": 2}


class Kernel(Protocol):
    """A compiled kernel, as ``cupy.RawModule.get_function`` returns it."""

    def __call__(
        self,
        grid: tuple[int, ...],
        block: tuple[int, ...],
        args: tuple[Any, ...],
        *,
        shared_mem: int = 0,
    ) -> None: ...


class Module(Protocol):
    """A compiled kernel source, such as a ``cupy.RawModule``."""

    def get_function(self, name: str) -> Kernel: ...


@dataclass(frozen=True)
class DeviceProperties:
    """What the launch sizes depend on: a device's multiprocessor count and limits."""

    multiprocessors: int
    max_threads_per_block: int
    max_threads_per_multiprocessor: int
    shared_memory_per_block: int


@dataclass(frozen=True)
class LaunchPlan:
    """Grid and block of a row kernel: ``warp_per_row`` (several rows to a block, a warp
    each) or one block per row; ``shared_mem`` bytes of dynamic shared memory. With
    ``splits > 1`` each row is cut into that many spans of ``chunk`` entries, a block each
    (see ``kernels/rows.cuh``)."""

    grid: int
    block: int
    warp_per_row: bool
    shared_mem: int = 0
    splits: int = 1
    chunk: int = 0


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _clips(op: str, validate: bool) -> bool:
    """Whether ``op``'s results below 0 become 0 (:data:`kldiv._table.DIVERGENCES`)."""
    return DIVERGENCES[op].clips(validate)


class Launcher:
    """Runs the CuPy backend's kernels on arrays of ``xp`` (``cupy``, or ``numpy`` in tests).

    Parameters
    ----------
    module_factory : callable
        Builds the module of one kernel source file (a path in
        :data:`kldiv._backends.cupy._sources.SOURCES`); called once per file, on first use.
    xp : module
        The array library that allocates outputs and lays inputs out: ``cupy`` or ``numpy``.
    device : DeviceProperties
        The device the launches are sized for.
    """

    def __init__(
        self, module_factory: Callable[[Path], Module], xp: Namespace, device: DeviceProperties
    ) -> None:
        self._module_factory = module_factory
        self._modules: dict[Path, Module] = {}
        self._kernels: dict[str, Kernel] = {}
        self._lock = threading.Lock()
        self.xp = xp
        self.device = device
        # Whole warps, and no more than the kernels' __launch_bounds__ allow.
        self.max_block = min(_sources.MAX_BLOCK_THREADS, device.max_threads_per_block)
        self.max_block -= self.max_block % WARP_SIZE

    # ---------------------------------------------------------------- kernels

    def _kernel(self, source: Path, op: str, dtype: Any) -> Kernel:
        """The entry point ``<op>_<dtype>`` of ``source``, built once."""
        name = f"{op}_{np.dtype(dtype).name}"
        with self._lock:
            if name not in self._kernels:
                if source not in self._modules:
                    self._modules[source] = self._module_factory(source)
                self._kernels[name] = self._modules[source].get_function(name)
            return self._kernels[name]

    def _resident_blocks(self, threads: int) -> int:
        """Blocks of ``threads`` that fill the device once: more only queue behind them, so
        the kernels' grid-stride loops take the rest."""
        per_multiprocessor = max(1, self.device.max_threads_per_multiprocessor // threads)
        return self.device.multiprocessors * per_multiprocessor

    def row_plan(self, rows: int, n: int, *, split: bool = False) -> LaunchPlan:
        """A warp per row for rows up to :data:`WARP_ROW_MAX` long, else a block per row.

        With ``split`` (the kernel can split rows), rows too few to fill the device with a
        block each are cut into spans of at least :data:`SPLIT_MIN_ENTRIES`, a block to a
        span, until the spans fill it: 16 rows of 10**6 on 132 multiprocessors of 4 blocks
        are 33 spans each, 528 blocks, where whole rows would be 16."""
        if n <= WARP_ROW_MAX:
            threads = min(ROWS_BLOCK_THREADS, self.max_block)
            rows_per_block = threads // WARP_SIZE
        else:
            threads = min(self.max_block, _round_up(-(-n // ENTRIES_PER_THREAD), WARP_SIZE))
            rows_per_block = 1
        resident = self._resident_blocks(threads)
        blocks = -(-rows // rows_per_block)
        grid = max(1, min(blocks, resident))
        if split and rows_per_block == 1 and 0 < rows < resident:
            splits = min(-(-resident // rows), n // SPLIT_MIN_ENTRIES)
            if splits > 1:
                chunk = _round_up(-(-n // splits), WARP_SIZE)
                splits = -(-n // chunk)  # no span left empty
                grid = min(rows * splits, resident)
                return LaunchPlan(grid, threads, False, splits=splits, chunk=chunk)
        return LaunchPlan(grid, threads, n <= WARP_ROW_MAX, chunk=n)

    def loss_plan(self, rows: int, k: int, row_bytes: int) -> LaunchPlan:
        """:meth:`row_plan` (split rows included), with ``row_bytes`` of shared memory per
        row to cache the row in when that fits (fewer warps to a block if that makes it fit);
        else, and for split rows, no cache."""
        plan = self.row_plan(rows, k, split=True)
        if plan.splits > 1:
            return plan
        budget = min(self.device.shared_memory_per_block, LAUNCH_SHARED_MEMORY)
        budget -= LOSS_STATIC_SHARED
        if not plan.warp_per_row:
            cached = row_bytes <= budget
            return LaunchPlan(plan.grid, plan.block, False, row_bytes if cached else 0, chunk=k)
        warps = min(plan.block // WARP_SIZE, budget // max(row_bytes, 1))
        if warps == 0:
            return plan
        threads = warps * WARP_SIZE
        grid = max(1, min(-(-rows // warps), self._resident_blocks(threads)))
        return LaunchPlan(grid, threads, True, warps * row_bytes, chunk=k)

    # ---------------------------------------------------------------- the backend interface

    def rel_entr(self, p: Array, q: Array, *, validate: bool) -> Array:
        """As :func:`kldiv._agnostic.rel_entr`: one elementwise kernel."""
        return self._map("rel_entr", p, q)

    def kl_div(
        self, p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool
    ) -> Array:
        """As :func:`kldiv._agnostic.kl_div`: ``sum(t) + sum(p - q)`` with terms ``t >= 0``
        for distributions (``validate``; a result below 0, a rounding of the inputs' sums, is
        0), the form for measures of any mass otherwise (``kernels/terms.cuh``)."""
        op = "kl_div" if validate else "kl_div_measures"
        return self._reduce(op, (p, q), axes, keepdims, clip=_clips("kl_div", validate))

    def kl_div_logits(
        self, a: Array, b: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool
    ) -> Array:
        """As :func:`kldiv._agnostic.kl_div_logits`: two passes, the rows' log-sum-exp and
        then terms ``>= 0``; a result below 0 is a rounding and is 0, as on the NumPy path."""
        return self._divergence("kl_div_logits", (a, b), axes, keepdims, validate)

    def entropy(self, p: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool) -> Array:
        """As :func:`kldiv._agnostic.entropy`."""
        return self._divergence("entropy", (p,), axes, keepdims, validate)

    def cross_entropy(
        self, p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool
    ) -> Array:
        """As :func:`kldiv._agnostic.cross_entropy`."""
        return self._divergence("cross_entropy", (p, q), axes, keepdims, validate)

    def js_div(
        self, p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool
    ) -> Array:
        """As :func:`kldiv._agnostic.js_div`. JS is never below 0, so a result below 0 is a
        rounding and is 0, validated or not (as on the NumPy path)."""
        return self._divergence("js_div", (p, q), axes, keepdims, validate)

    def hellinger(
        self, p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool
    ) -> Array:
        """As :func:`kldiv._agnostic.hellinger`: the squared distance, whose root the public
        layer takes."""
        return self._divergence("hellinger", (p, q), axes, keepdims, validate)

    def total_variation(
        self, p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool
    ) -> Array:
        """As :func:`kldiv._agnostic.total_variation`."""
        return self._divergence("total_variation", (p, q), axes, keepdims, validate)

    def softmax_kl_loss(
        self, pred: Array, target: Array, *, norm_target: bool
    ) -> tuple[Array, Array]:
        """As :func:`kldiv._agnostic.softmax_kl_loss`: the error summed over the ``(N, K)``
        rows (0-d, float64) and the grad in ``pred``'s dtype; see ``kernels/loss.cu``. The
        rows' errors come out of the kernel one per row and are summed here, in float64: an
        order fixed by the launch, unlike atomics, so a result is reproducible."""
        xp = self.xp
        grad_dtype = pred.dtype
        dtype, (pred, target) = self._common((pred, target))
        pred, target = xp.ascontiguousarray(pred), xp.ascontiguousarray(target)
        rows, k = pred.shape
        grad = xp.empty((rows, k), dtype=dtype)
        row_error = xp.empty(rows, dtype=xp.float64)
        if grad.size:
            row_bytes = k * grad.itemsize * (2 if norm_target else 1)
            plan = self.loss_plan(rows, k, row_bytes)
            kernel = self._kernel(_sources.LOSS, "softmax_kl_loss", dtype)
            scratch, phases = self._phases(plan, rows, passes=2)
            # grad = (y - s) * (1/N), in the kernels' arithmetic type (float for float16)
            per_sample = (np.float64 if dtype == np.float64 else np.float32)(1 / rows)
            for phase, grid, block in phases:
                args = (
                    pred,
                    target,
                    grad,
                    row_error,
                    scratch,
                    np.int64(rows),
                    np.int64(k),
                    np.int64(plan.splits),
                    np.int64(plan.chunk),
                    np.int32(phase),
                    per_sample,
                    np.int32(norm_target),
                    np.int32(plan.shared_mem > 0),
                    np.int32(plan.warp_per_row),
                )
                kernel((grid,), (block,), args, shared_mem=plan.shared_mem)
        else:  # rows of no classes: nothing to sum
            row_error[...] = 0
        error = xp.asarray(xp.sum(row_error, dtype=xp.float64))
        return error, grad if grad.dtype == grad_dtype else grad.astype(grad_dtype)

    # ---------------------------------------------------------------- launches

    def _common(self, arrays: Sequence[Array]) -> tuple[Any, list[Array]]:
        """The result dtype, and the arrays in it: the kernels take one dtype."""
        dtype = self.xp.result_type(*arrays)
        return dtype, [a if a.dtype == dtype else a.astype(dtype) for a in arrays]

    def _phases(
        self, plan: LaunchPlan, rows: int, *, passes: int
    ) -> tuple[Array | None, list[tuple[int, int, int]]]:
        """The scratch buffer of ``plan`` (None for whole rows) and its launches, each
        ``(phase, grid, block)``: phase 0 for whole rows; for split rows phases 1 to
        ``passes``, then the finish, one thread to a row (``kernels/rows.cuh``)."""
        if plan.splits == 1:
            return None, [(0, plan.grid, plan.block)]
        slots = passes * rows * plan.splits
        scratch = self.xp.empty(slots * _sources.SLOT_BYTES // 8, dtype=self.xp.float64)
        finish = min(FINISH_BLOCK_THREADS, self.max_block)
        phases = [(k, plan.grid, plan.block) for k in range(1, passes + 1)]
        phases.append((passes + 1, -(-rows // finish), finish))
        return scratch, phases

    def _divergence(
        self,
        op: str,
        arrays: Sequence[Array],
        axes: tuple[int, ...],
        keepdims: bool,
        validate: bool,
    ) -> Array:
        """``op`` over ``axes``, clipped at 0 as its row of :data:`kldiv._table.DIVERGENCES`
        says for ``validate``."""
        return self._reduce(op, arrays, axes, keepdims, clip=_clips(op, validate))

    def _reduce(
        self,
        op: str,
        arrays: Sequence[Array],
        axes: tuple[int, ...],
        keepdims: bool,
        *,
        clip: bool,
    ) -> Array:
        """``op`` of one or two arrays over ``axes``; results below 0 become 0 with ``clip``.
        One launch, or for split rows one per pass and a finish (``kernels/rows.cuh``)."""
        xp = self.xp
        dtype, arrays = self._common(arrays)
        shape = _layout.broadcast_shape(arrays)
        laid_out = [_layout.as_rows(x, shape, axes, xp) for x in arrays]
        a, a_stride = laid_out[0]
        b, b_stride = laid_out[1] if len(laid_out) == 2 else (None, 0)  # entropy: p alone
        rows = math.prod(_layout.rows_shape(shape, axes))
        n = math.prod(shape[i] for i in axes)
        out = xp.empty(rows, dtype=dtype)
        if rows:
            kernel = self._kernel(_sources.DIVERGENCES, op, dtype)
            plan = self.row_plan(rows, n, split=True)
            scratch, phases = self._phases(plan, rows, passes=PASSES.get(op, 1))
            for phase, grid, block in phases:
                args = (
                    a,
                    np.int64(a_stride),
                    b,
                    np.int64(b_stride),
                    out,
                    scratch,
                    np.int64(rows),
                    np.int64(n),
                    np.int64(plan.splits),
                    np.int64(plan.chunk),
                    np.int32(phase),
                    np.int32(plan.warp_per_row),
                    np.int32(clip),
                )
                kernel((grid,), (block,), args)
        return xp.reshape(out, _layout.kept_shape(shape, axes, keepdims))

    def _map(self, op: str, p: Array, q: Array) -> Array:
        """Elementwise ``op`` of the broadcast ``p`` and ``q``."""
        xp = self.xp
        dtype, (p, q) = self._common((p, q))
        shape = _layout.broadcast_shape((p, q))
        axes = (len(shape) - 1,) if shape else ()
        (p, p_stride), (q, q_stride) = (_layout.as_rows(x, shape, axes, xp) for x in (p, q))
        n = shape[-1] if shape else 1
        rows = math.prod(shape) // n if n else 0
        if p_stride == q_stride == n:  # both contiguous: one long row, no index division
            rows, n = 1, rows * n
        out = xp.empty(shape, dtype=dtype)
        if out.size:
            threads = min(ROWS_BLOCK_THREADS, self.max_block)
            grid = max(1, min(-(-out.size // threads), self._resident_blocks(threads)))
            args = (p, np.int64(p_stride), q, np.int64(q_stride), out, np.int64(rows), np.int64(n))
            self._kernel(_sources.DIVERGENCES, op, dtype)((grid,), (threads,), args)
        return out
