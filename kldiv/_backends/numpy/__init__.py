"""The NumPy fast path: every divergence as a fused, tiled, multi-threaded row reduction.

``np.sum(p * np.log(p / q), axis=-1)`` writes two full-size temporaries and runs on one core.
Here the rows are walked in tiles of at most ``kldiv.get_options().tile`` elements: each
tile of each input is cast once to float64 into a worker's own scratch (a float64 input is
read in place), checked, and reduced to partial row sums, while the tile is still in the
core's L2 cache. Workers take contiguous ranges of rows, so each row's result is written
once, by one thread; NumPy releases the GIL inside each ufunc, so the cores run at once.
Extra memory is a few scratch tiles per worker, whatever the input size.

The arithmetic follows :mod:`kldiv._agnostic` in substance, in fewer passes:

- ``KL = sum(p * log1p((p - q)/q))``. ``log1p`` of ``u = (p - q)/q`` is exact to a rounding
  relative to ``log(p/q)`` even for ``p`` near ``q``, where ``log(p/q)`` is only exact to an
  absolute rounding; that is what keeps near-identical distributions from cancelling. For
  float64 input the terms are summed as ``p*log1p(u) - (p - q) >= 0`` plus ``sum(p - q)``.
- Zeros and overflow are not masked up front: a tile whose row sum comes out NaN or infinite
  (``0*log(0)``, ``q == 0``, ``p/q`` overflowing) has those rows recomputed, first with the
  zero convention applied, then, if still not finite, by the exact generic code.
- Validation is fused: a negative or NaN entry makes its row NaN (a logarithm of a negative
  argument), the minimum of the one array whose negatives could slip through is taken, and
  the row sums on the way. Only when they show a problem do the checks of
  :mod:`kldiv._validation` run (:func:`_check`), to say exactly what and where.

Where a C compiler built :mod:`._native` (``setup.py``), ``rel_entr``, ``kl_div``,
``entropy``, ``cross_entropy``, ``js_div``, ``hellinger``, ``total_variation`` and
``kl_div_logits`` of float32 or float64 run
its compiled row kernels instead, one call per worker, each a single vectorised pass per row
(see ``_native.c``; :data:`_FUSED` says which kernel and which tiles each function takes).
Rows they leave NaN (an element outside their fast domain: a zero ``q``, a subnormal, a bad
value, a ``-inf`` logit; or an overflow) are redone by the tiles here, which stay the
reference for every convention and every check.

Inputs must present their distribution axes as trailing, viewable as ``(rows, n)`` without a
copy (any C-ordered array reduced over its last axes, broadcasting included). Anything else
goes to the generic code, which is correct for every layout.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, NamedTuple, TypeVar

import numpy as np

from kldiv import _agnostic, _options
from kldiv import _validation as v
from kldiv._dispatch import fuses
from kldiv._layout import kept_shape
from kldiv._table import DIVERGENCES, LOGITS, NORMALISED, VALUES
from kldiv._typing import Array, Namespace


def _load_native() -> ModuleType | None:
    """The compiled row kernels, :mod:`._native`, or None where they were not built
    (no C compiler at install): then everything runs in NumPy."""
    try:
        return importlib.import_module("kldiv._backends.numpy._native")
    except ImportError:
        return None


_native = _load_native()
_KERNEL_PARALLEL_MIN: int = 0 if _native is None else _native.PARALLEL_MIN


def _kernels() -> ModuleType | None:
    """The compiled kernels, unless they are missing or switched off (``kldiv.set_options``)."""
    return _native if _options.get_options().compiled else None


R = TypeVar("R")


def _tile() -> int:
    """float64 elements in one scratch tile: ``kldiv.set_options(tile=)``."""
    return _options.get_options().tile


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    """In a forked child the pool's threads are gone while the pool thinks it has them, and
    work handed to it would wait forever (PyTorch's DataLoader workers fork, for one)."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _workers() -> int:
    """Threads to use: ``kldiv.set_options(threads=)``, else one per core we may run on."""
    threads = _options.get_options().threads
    if threads is not None:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _executor(workers: int) -> ThreadPoolExecutor:
    """A pool of at least ``workers`` threads, made anew when the thread count setting has
    grown. The old pool is not shut down: another thread's call may be about to hand it
    work; its threads end when nothing holds it any more."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kldiv")
        return _pool


_local = threading.local()


@contextlib.contextmanager
def on_this_thread() -> Iterator[None]:
    """Run the reductions inside on the calling thread alone: for a caller that is itself one
    of a parallel scheduler's tasks (a Dask chunk), whose cores are already taken."""
    before = getattr(_local, "serial", False)
    _local.serial = True
    try:
        yield
    finally:
        _local.serial = before


def _threads_for(rows: int, n: int) -> int:
    """How many threads reduce ``rows`` rows of ``n`` at once: one where threads would not
    pay (or under :func:`on_this_thread`), else a worker per core, at most one per row."""
    workers = 1 if getattr(_local, "serial", False) else min(_workers(), rows)
    return 1 if workers < 2 or rows * n < _options.get_options().parallel_min else workers


def kernel_threads(rows: int, size: int) -> int:
    """Threads for one call of a compiled kernel (``kl_rows``, ``kl_logit_rows``, the loss
    kernels, ``rel_entr_rows``) on ``rows`` rows of ``size`` elements in all, which splits
    the rows over threads of its own and decides there, by the call's size and how recent
    the last was, whether waking them pays (``_native_threads.h``): a worker per core, at most
    one per row; one under :func:`on_this_thread`, and below the kernels' ``PARALLEL_MIN``
    elements, where they would take one anyway (asked here first: a tiny call's time is its
    overhead). ``parallel_min`` is for the threads of this module's Python pool (:func:`_run`:
    the NumPy tiles), whose hand-overs cost far more."""
    if size < _KERNEL_PARALLEL_MIN or getattr(_local, "serial", False):
        return 1
    return max(1, min(_workers(), rows))


# Pieces per thread: a thread that starts late (an idle core of a virtual machine can take a
# millisecond or more to wake) leaves its pieces to the others, so that a call is never
# slower than on one thread by more than about a piece.
_PIECES_PER_THREAD = 4


def _row_ranges(rows: int, n: int, threads: int | None = None) -> list[tuple[int, int]]:
    """Contiguous row ranges covering the rows, in order: one when threads would not pay,
    else up to :data:`_PIECES_PER_THREAD` per thread, fewer where a range would hold under
    half ``parallel_min`` elements or no row, but never fewer than one per thread.
    ``threads``: :func:`_threads_for`'s, where the caller has it already."""
    if threads is None:
        threads = _threads_for(rows, n)
    if threads == 1:
        return [(0, rows)]
    least = max(1, _options.get_options().parallel_min // 2)
    pieces = max(threads, min(rows, threads * _PIECES_PER_THREAD, rows * n // least))
    bounds = [rows * i // pieces for i in range(pieces + 1)]
    return list(itertools.pairwise(bounds))


def _run(job: Callable[[int, int], R], rows: int, n: int) -> list[R]:
    """``job(start, stop)`` over the row ranges, in parallel; the jobs' results in order.

    The calling thread takes ranges too, from the same queue as the pool's threads, rather
    than waiting for them: measured on a 2-core virtual machine, a call right after other
    work waited 1.5 ms for the pool's second thread to wake, and took 3.5 ms where one
    thread took 1.7."""
    threads = _threads_for(rows, n)
    ranges = _row_ranges(rows, n, threads)
    if len(ranges) == 1:
        return [job(*ranges[0])]
    results: list[Any] = [None] * len(ranges)
    queue = iter(range(len(ranges)))
    lock = threading.Lock()
    stop = False

    def work() -> None:
        nonlocal stop
        try:
            while True:
                with lock:
                    i = None if stop else next(queue, None)
                if i is None:
                    return
                results[i] = job(*ranges[i])
        except BaseException:
            stop = True  # the others finish the range at hand and take no more
            raise

    pool = _executor(threads - 1)
    futures = [pool.submit(work) for _ in range(threads - 1)]
    try:
        work()
    finally:
        for f in futures:
            f.exception()  # waits; an error of another thread's job is raised below
    for f in futures:
        f.result()
    return results


def _as_rows(x: Array, shape: tuple[int, ...], axes: tuple[int, ...]) -> Array | None:
    """``x`` broadcast to ``shape``, ``axes`` moved last, as a ``(rows, n)`` view; None if
    that view would need a copy."""
    x = np.moveaxis(np.broadcast_to(x, shape), axes, tuple(range(-len(axes), 0)))
    n = math.prod(shape[a] for a in axes)
    try:
        return x.reshape((-1, n) if n else (math.prod(x.shape[: -len(axes)]), 0), copy=False)
    except (ValueError, TypeError):  # a copy needed, or NumPy older than 2.1
        return None


def _all_as_rows(
    arrays: Sequence[Array], shape: tuple[int, ...], axes: tuple[int, ...]
) -> list[Array] | None:
    """:func:`_as_rows` of every array, or None if any one needs a copy."""
    views = [_as_rows(a, shape, axes) for a in arrays]
    return None if any(view is None for view in views) else views


def _blocks(start: int, stop: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering ``start:stop``."""
    for first in range(start, stop, size):
        yield slice(first, min(first + size, stop))


def _tile_shape(n: int) -> tuple[int, int]:
    """(rows, columns) of a tile for rows of ``n`` elements."""
    tile = _tile()
    if n >= tile:
        return 1, tile
    return max(1, tile // max(n, 1)), n


class _Scratch:
    """A worker's float64 tiles, allocated on first use, each viewed as ``(m, w)``
    contiguous for the tile at hand."""

    def __init__(self) -> None:
        self._flat: dict[int, Array] = {}

    def tile(self, index: int, m: int, w: int) -> Array:
        flat = self._flat.get(index)
        # sized by the tile at hand, not by the setting, which another thread may change
        if flat is None or flat.size < m * w:
            flat = self._flat[index] = np.empty(max(_tile(), m * w))
        return flat[: m * w].reshape(m, w)


def _load(x: Array, rows: slice, cols: slice, scratch: _Scratch, index: int) -> Array:
    """The float64 tile ``x[rows, cols]``: in place for float64, else cast into scratch."""
    src = x[rows, cols]
    if src.dtype == np.float64:
        return src
    dst = scratch.tile(index, *src.shape)
    np.copyto(dst, src)
    return dst


def _dot_rows(a: Array, b: Array) -> Array:
    """Row-wise ``sum(a * b)`` with no temporary."""
    return np.einsum("ij,ij->i", a, b)


TileTerms = Callable[[Sequence[Array], _Scratch], Array]


def _row_reduce(
    terms: TileTerms,
    arrays: Sequence[Array],
    *,
    sign_checked: tuple[int, ...],
    validate: bool,
    clip: bool,
    out: Array,
) -> bool:
    """Write ``out[r] = sum over row r of terms(tiles)`` for ``(rows, n)`` probabilities.

    ``terms(tiles, scratch)`` gets one float64 tile per array and returns its partial row
    sums, NaN for a row holding a NaN or (mostly) a negative entry: a negative probability
    makes a logarithm's argument negative. ``sign_checked`` names the arrays whose negative
    entries the terms can miss (a negative ``q`` under a negative ``p`` gives a positive
    ratio); their tiles' minima are checked, and such rows set to NaN. With ``validate``, a
    NaN row, a row off 1 or a negative entry flags the input (returns True) for the public
    layer's checks to name. ``clip`` rounds results below 0 to 0.
    """
    rows, n = arrays[0].shape
    tile_rows, tile_cols = _tile_shape(n)
    tolerances = [v.sum_tolerance(x.dtype, n, np) for x in arrays]

    def job(start: int, stop: int) -> bool:
        scratch = _Scratch()
        flagged = False
        with np.errstate(all="ignore"):
            for r in _blocks(start, stop, tile_rows):
                total: Any = 0.0
                sums: list[Any] = [0.0] * len(arrays)
                for c in _blocks(0, n, tile_cols):
                    tiles = [_load(x, r, c, scratch, i) for i, x in enumerate(arrays)]
                    part = terms(tiles, scratch)
                    for i in sign_checked:
                        if tiles[i].size and not tiles[i].min() >= 0:  # NaN min hides a sign
                            part[(tiles[i] < 0).any(axis=1)] = np.nan
                    if validate:
                        sums = [s + t.sum(axis=1) for s, t in zip(sums, tiles, strict=True)]
                    total = part if c.start == 0 else total + part
                if validate:
                    flagged = flagged or bool(np.isnan(total).any())
                    for s, tol in zip(sums, tolerances, strict=True):
                        flagged = flagged or not (np.abs(s - 1) <= tol).all()
                if clip:
                    np.maximum(total, 0.0, out=total)
                out[r] = total
        return flagged

    return any(_run(job, rows, n))


def _fix_rows(part: Array, recompute: Callable[[Array], Array]) -> Array:
    """Recompute the rows of ``part`` that came out NaN or infinite."""
    finite = np.isfinite(part)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        part[bad] = recompute(bad)
    return part


_xp = None


def _generic_np() -> Namespace:
    """The array-API NumPy namespace, for the exact generic code on the rare rows that need it."""
    global _xp
    if _xp is None:
        from kldiv import _compat

        _xp = _compat.array_namespace(np.empty(0))
    return _xp


def _zero_under(p: Array, q: Array) -> Array:
    """Where ``p``'s zero convention applies: ``p == 0`` against a valid ``q`` (not negative,
    NaN or infinite), so that the fix-up of a row never hides a bad ``q`` behind a zero
    ``p``."""
    return (p == 0) & (q >= 0) & (q < np.inf)


def _kl_tile(tiles: Sequence[Array], scratch: _Scratch) -> Array:
    """``sum(p*log1p((p - q)/q))`` per row: for float32 input, whose float64 arithmetic is
    already far below the result's rounding."""
    p, q = tiles
    u = scratch.tile(2, *p.shape)
    np.subtract(p, q, out=u)
    np.divide(u, q, out=u)
    np.log1p(u, out=u)
    return _fix_rows(_dot_rows(p, u), lambda rows: _kl_exact(p[rows], q[rows], u[rows]))


def _kl_tile_nonnegative(tiles: Sequence[Array], scratch: _Scratch) -> Array:
    """The same as ``sum(p*L - (p - q)) + sum(p - q)``, ``L = log1p((p - q)/q)``: each term
    ``p*L - (p - q) >= 0``, both sums pairwise. For float64 input, where the mixed signs of
    ``p*L`` cost digits: at KL 1e-9 the error drops from 3e-12 to 3e-13 (mpmath reference,
    benchmarks/accuracy.py), for two more passes over the tile."""
    p, q = tiles
    d = scratch.tile(2, *p.shape)
    u = scratch.tile(3, *p.shape)
    np.subtract(p, q, out=d)
    np.divide(d, q, out=u)
    np.log1p(u, out=u)
    terms = scratch.tile(4, *p.shape)
    np.multiply(p, u, out=terms)
    np.subtract(terms, d, out=terms)
    sums = terms.sum(axis=1) + d.sum(axis=1)
    return _fix_rows(sums, lambda rows: _kl_exact(p[rows], q[rows], u[rows]))


def _generic_rows(func: Callable[..., Array], *rows: Array) -> Array:
    """``func`` of :mod:`kldiv._agnostic` on float64 ``(rows, n)`` arrays, unvalidated: the
    exact generic code, which alone tells an infinite result (``q == 0 < p``) from bad input
    (NaN), for the rows the tiles' faster forms cannot take."""
    return func(*rows, axes=(1,), keepdims=False, validate=False, xp=_generic_np())


def _kl_tile_unchecked(tiles: Sequence[Array], scratch: _Scratch) -> Array:
    """``sum(p*log(p/q))`` per row of unvalidated input, each entry's term whole.

    Measures whose masses differ (``validate=False``) would have a large ``sum(t)`` cancel
    against ``sum(p - q)`` in the split form of the other tiles, so each term is
    ``p*log(p/q)`` itself, its logarithm exact relative to its value: ``log1p((p - q)/q)``
    near ``p == q``, ``log(p) - log(q)`` elsewhere (where ``log1p`` would lose a tiny
    ``p/q``), as the ``rel_entr`` tiles take it. Rows that come out NaN or infinite (zeros
    in ``q``, bad input) go to the generic code.
    """
    p, q = tiles
    u = scratch.tile(2, *p.shape)
    np.subtract(p, q, out=u)
    np.divide(u, q, out=u)
    far = ~(np.abs(u) < 0.5)
    np.log1p(u, out=u)
    if far.any():  # whole-tile logs: cheaper than gathering the far entries
        log_p, log_q = scratch.tile(3, *p.shape), scratch.tile(4, *p.shape)
        np.log(p, out=log_p)
        np.log(q, out=log_q)
        np.subtract(log_p, log_q, out=log_p)
        np.copyto(u, log_p, where=far)
    np.copyto(u, 0.0, where=_zero_under(p, q))  # 0*log(0/q) = 0
    return _fix_rows(
        _dot_rows(p, u), lambda rows: _generic_rows(_agnostic.kl_div, p[rows], q[rows])
    )


def _kl_exact(p: Array, q: Array, log_ratio: Array) -> Array:
    """Rows that came out NaN or infinite: the zero convention, then the generic code."""
    fixed = _dot_rows(p, np.where(_zero_under(p, q), 0.0, log_ratio))
    return _fix_rows(fixed, lambda still: _generic_rows(_agnostic.kl_div, p[still], q[still]))


def _entropy_tile(tiles: Sequence[Array], scratch: _Scratch) -> Array:
    """``0 - sum(p*log(p))`` per row: ``0 -`` so that a point mass gives 0., not -0."""
    (p,) = tiles
    log_p = scratch.tile(2, *p.shape)
    np.log(p, out=log_p)

    def exact(rows: Array) -> Array:
        pr = p[rows]
        fixed = 0.0 - _dot_rows(pr, np.where(pr == 0, 0.0, log_p[rows]))
        return _fix_rows(fixed, lambda still: _generic_rows(_agnostic.entropy, pr[still]))

    return _fix_rows(0.0 - _dot_rows(p, log_p), exact)


def _cross_entropy_tile(tiles: Sequence[Array], scratch: _Scratch) -> Array:
    p, q = tiles
    log_q = scratch.tile(2, *p.shape)
    np.log(q, out=log_q)

    def exact(rows: Array) -> Array:
        pr, qr = p[rows], q[rows]
        fixed = 0.0 - _dot_rows(pr, np.where(_zero_under(pr, qr), 0.0, log_q[rows]))
        return _fix_rows(
            fixed, lambda still: _generic_rows(_agnostic.cross_entropy, pr[still], qr[still])
        )

    return _fix_rows(0.0 - _dot_rows(p, log_q), exact)


def _js_tile(tiles: Sequence[Array], scratch: _Scratch) -> Array:
    """``(sum(p*log1p(s)) + sum(q*log1p(-s)))/2``, ``s = (p - q)/(p + q)``: ``KL(p || m)`` and
    ``KL(q || m)`` with ``(p - m)/m = s``."""
    p, q = tiles
    s = scratch.tile(2, *p.shape)
    log_q_m = scratch.tile(3, *p.shape)
    np.subtract(p, q, out=s)
    np.add(p, q, out=log_q_m)
    np.divide(s, log_q_m, out=s)
    np.negative(s, out=log_q_m)
    np.log1p(log_q_m, out=log_q_m)
    np.log1p(s, out=s)

    def exact(rows: Array) -> Array:
        pr, qr = p[rows], q[rows]
        from_p = _dot_rows(pr, np.where(_zero_under(pr, qr), 0.0, s[rows]))
        from_q = _dot_rows(qr, np.where(_zero_under(qr, pr), 0.0, log_q_m[rows]))
        fixed = (from_p + from_q) / 2
        # Still not finite: s rounded to +-1 (one side over 1e16 times the other), or bad input
        return _fix_rows(fixed, lambda still: _generic_rows(_agnostic.js_div, pr[still], qr[still]))

    return _fix_rows((_dot_rows(p, s) + _dot_rows(q, log_q_m)) / 2, exact)


def _hellinger_tile(tiles: Sequence[Array], scratch: _Scratch) -> Array:
    """``sum((sqrt(p) - sqrt(q))**2)/2`` per row, in float64: the square root of a negative
    entry is NaN."""
    p, q = tiles
    d = scratch.tile(2, *p.shape)
    root_q = scratch.tile(3, *p.shape)
    np.sqrt(p, out=d)
    np.sqrt(q, out=root_q)
    np.subtract(d, root_q, out=d)
    return _dot_rows(d, d) / 2


def _tv_tile(tiles: Sequence[Array], scratch: _Scratch) -> Array:
    """``sum(|p - q|)/2`` per row; signs are checked apart (``_FUSED``)."""
    p, q = tiles
    d = scratch.tile(2, *p.shape)
    np.subtract(p, q, out=d)
    np.abs(d, out=d)
    return d.sum(axis=1) / 2


def _reduce(
    terms: TileTerms,
    names: tuple[str, ...],
    arrays: Sequence[Array],
    axes: tuple[int, ...],
    keepdims: bool,
    *,
    sign_checked: tuple[int, ...],
    validate: bool,
    clip: bool,
    generic: Callable[[], Array],
) -> Array:
    """Lay the arrays out as rows, reduce them with ``terms`` and shape the result.

    A layout that cannot be viewed as rows runs ``generic`` after the public layer's checks.
    """
    shape = v.broadcast_shape(names, [tuple(a.shape) for a in arrays])
    views = _all_as_rows(arrays, shape, axes)
    if views is None:
        if validate:
            _check(names, arrays, shape, axes)
        return generic()
    out = np.empty(views[0].shape[0], dtype=np.result_type(*arrays))
    if _row_reduce(terms, views, sign_checked=sign_checked, validate=validate, clip=clip, out=out):
        _check(names, arrays, shape, axes)
    return out.reshape(kept_shape(shape, axes, keepdims))


def _check(
    names: Sequence[str], arrays: Sequence[Array], shape: tuple[int, ...], axes: tuple[int, ...]
) -> None:
    """The public layer's checks on probabilities, which name the first problem.

    Run when the fused checks flagged something, or for a layout they do not cover. A row
    right at the tolerance may pass here, summed in another order; then nothing is raised
    and the computed result stands.
    """
    v.check_values(names, (VALUES, NORMALISED), arrays, shape, axes, _generic_np())


def _reduction(name: str) -> Callable[..., Array]:
    """The NumPy path's ``name``, a reduction of :data:`_FUSED`: as
    :func:`kldiv._agnostic.<name>`, fused, by :func:`_fused_reduction`, with the generic
    code for a layout that cannot be viewed as rows. One definition for every such function,
    as the bridges' :func:`kldiv._backends.forwarding` is for theirs."""
    generic = getattr(_agnostic, name)

    @fuses(VALUES, NORMALISED)
    def reduction(
        *arrays: Array, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
    ) -> Array:
        return _fused_reduction(
            name,
            arrays,
            axes,
            keepdims,
            validate,
            generic=lambda: generic(
                *arrays, axes=axes, keepdims=keepdims, validate=validate, xp=xp
            ),
        )

    reduction.__name__ = reduction.__qualname__ = name
    reduction.__doc__ = (
        f"As :func:`kldiv._agnostic.{name}`, fused: compiled (:mod:`._native`) where it is "
        "built and the layout allows, else in NumPy tiles."
    )
    return reduction


class _Fused(NamedTuple):
    """How the NumPy path computes one reduction: the compiled kernels' ``op`` (the
    ``kl_rows`` argument), the tile terms (for the rows the kernels leave, and without them) by
    dtype and ``validate``, and the inputs whose signs the tiles check apart (those whose
    negative entries the terms' arithmetic would not make NaN)."""

    op: str
    tiles: Callable[[Any, bool], TileTerms]
    sign_checked: tuple[int, ...]


def _kl_tile_for(dtype: Any, validate: bool) -> TileTerms:
    """The tile terms of ``kl_div``: unvalidated input may be a measure of any mass."""
    if not validate:
        return _kl_tile_unchecked
    return _kl_tile_nonnegative if dtype == np.float64 else _kl_tile


_FUSED = {
    # log1p((p - q)/q) is NaN for p < 0 < q, not for p, q < 0: q's sign needs its own check
    "kl_div": _Fused("kl", _kl_tile_for, (1,)),
    "entropy": _Fused("entropy", lambda dtype, validate: _entropy_tile, ()),  # log(p < 0): NaN
    # log(q) is NaN for q < 0; p < 0 only flips a term's sign
    "cross_entropy": _Fused("cross_entropy", lambda dtype, validate: _cross_entropy_tile, (0,)),
    # |s| > 1 for one negative entry, but s rounds to -1 for a tiny negative p, and
    # p*log1p(-s) is then +inf, not NaN: both signs are checked
    "js_div": _Fused("js", lambda dtype, validate: _js_tile, (0, 1)),
    "hellinger": _Fused("hellinger", lambda dtype, validate: _hellinger_tile, ()),  # sqrt: NaN
    "total_variation": _Fused("total_variation", lambda dtype, validate: _tv_tile, (0, 1)),
}
_NATIVE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

kl_div = _reduction("kl_div")
entropy = _reduction("entropy")
cross_entropy = _reduction("cross_entropy")
js_div = _reduction("js_div")  # never below 0: its table row clips, validated or not
hellinger = _reduction("hellinger")
total_variation = _reduction("total_variation")


def _fused_reduction(
    name: str,
    arrays: tuple[Array, ...],
    axes: tuple[int, ...],
    keepdims: bool,
    validate: bool,
    *,
    generic: Callable[[], Array],
) -> Array:
    """``name`` of :data:`_FUSED` by the compiled kernels where they are built and take the
    arrays (one float32 or float64 dtype, so that none is cast whole; rows contiguous), else
    by the NumPy tiles; ``generic`` for a layout that cannot be viewed as rows."""
    names = DIVERGENCES[name].inputs
    fused = _FUSED[name]
    dtype = np.result_type(*arrays)
    if _kernels() is not None and all(a.dtype == dtype for a in arrays) and dtype in _NATIVE_DTYPES:
        shape = v.broadcast_shape(names, [tuple(a.shape) for a in arrays])
        views = _all_as_rows(arrays, shape, axes)
        if views is not None and all(_rows_contiguous(x) for x in views):
            out = np.empty(views[0].shape[0], dtype=dtype)
            if _native_rows(name, views, out, validate=validate):
                _check(names, arrays, shape, axes)  # names the problem
            return out.reshape(kept_shape(shape, axes, keepdims))
    return _reduce(
        fused.tiles(dtype, validate),
        names,
        arrays,
        axes,
        keepdims,
        sign_checked=fused.sign_checked,
        validate=validate,
        clip=DIVERGENCES[name].clips(validate),
        generic=generic,
    )


def _rows_contiguous(rows: Array) -> bool:
    """Whether each row of a ``(rows, n)`` view is contiguous, as the compiled kernels need."""
    return bool(rows.shape[1] <= 1 or rows.strides[1] == rows.itemsize)


def _native_rows(name: str, views: Sequence[Array], out: Array, *, validate: bool) -> bool:
    """Write ``out[r]``, ``name`` of row ``r`` of the ``(rows, n)`` views (one float dtype),
    by one call of the compiled kernels on their own threads (:func:`kernel_threads`); True
    when ``validate`` finds a problem for the public layer's checks to name.

    The kernels leave NaN for a row holding an element outside their fast domain (a zero
    ``q``, a subnormal, a negative, NaN or infinite entry) or whose arithmetic overflowed
    (a term over the float range). Those rows are recomputed by the NumPy tiles, which know
    every convention and compute in float64, and flagged as they flag it. Unvalidated input
    may be a measure of any mass: for ``kl_div`` the kernels then keep each term far from
    ``p == q`` whole (``measures=True``), as :func:`_kl_tile_unchecked` does; the other
    kernels' terms need no such care (entropy's and cross entropy's are summed whole; JS,
    Hellinger and total variation are sums of non-negative terms for any masses).
    """
    assert _native is not None
    fused = _FUSED[name]
    p, q = views if len(views) == 2 else (views[0], views[0])
    rows, n = p.shape
    tolerance = v.sum_tolerance(p.dtype, n, np) if validate else None
    measures = name == "kl_div" and not validate

    def redo(again: Array, fixed: Array) -> bool:
        return _row_reduce(
            fused.tiles(p.dtype, validate),
            [x[again] for x in views],
            sign_checked=fused.sign_checked,
            validate=validate,
            clip=DIVERGENCES[name].clips(validate),
            out=fixed,
        )

    flagged = _native.kl_rows(
        p, q, out, tolerance, measures=measures, op=fused.op, threads=kernel_threads(rows, p.size)
    )
    return _redo_lost_rows(out, n, redo) or flagged


def _redo_lost_rows(out: Array, n: int, redo: Callable[[Array, Array], bool]) -> bool:
    """Recompute the rows of ``n`` elements the compiled kernels left NaN in ``out``:
    ``redo(rows, fixed)`` writes their results into ``fixed`` (float64) by the NumPy tiles
    and says whether they flagged anything, which is returned.

    ``redo`` gathers its rows (a copy), so they go in blocks of about four tiles: a few MiB
    however many rows come back, as all do for unchecked measures of different masses.
    """
    again = np.flatnonzero(np.isnan(out))
    flagged = False
    for block in _blocks(0, again.size, max(1, 4 * _tile() // max(n, 1))):
        rows = again[block]
        fixed = np.empty(rows.size)
        flagged = redo(rows, fixed) or flagged
        with np.errstate(all="ignore"):  # a KL over float32's range is inf, as in the tiles
            out[rows] = fixed
    return flagged


@fuses(VALUES)
def rel_entr(p: Array, q: Array, *, validate: bool, xp: Namespace) -> Array:
    """As :func:`kldiv._agnostic.rel_entr`: compiled (``rel_entr_rows``) where built, else
    tiled, ``p*log1p((p - q)/q)`` written per tile."""
    shape = v.broadcast_shape(("p", "q"), [tuple(p.shape), tuple(q.shape)])
    out = np.empty(shape, dtype=np.result_type(p, q))
    last = (len(shape) - 1,) if shape else ()
    if out.size == 0:
        return out
    views = _all_as_rows((p, q), shape, last) if shape else None
    if views is None:
        if validate:
            _check(("p", "q"), (p, q), shape, ())
        return _agnostic.rel_entr(p, q, validate=validate, xp=xp)
    out_rows = out.reshape(-1, shape[-1])
    rows, n = out_rows.shape
    compiled = _native_rel_entr(views, out_rows, validate=validate)
    if compiled is not None:
        if compiled:
            _check(("p", "q"), (p, q), shape, ())
        return out
    tile_rows, tile_cols = _tile_shape(n)

    def job(start: int, stop: int) -> bool:
        scratch = _Scratch()
        flagged = False
        with np.errstate(all="ignore"):
            for r in _blocks(start, stop, tile_rows):
                for c in _blocks(0, n, tile_cols):
                    pt, qt = (_load(x, r, c, scratch, i) for i, x in enumerate(views))
                    signs_ok = pt.min() >= 0 and qt.min() >= 0  # False for NaN too
                    flagged = flagged or not signs_ok
                    terms = scratch.tile(2, *pt.shape)
                    np.subtract(pt, qt, out=terms)
                    np.divide(terms, qt, out=terms)
                    # log1p((p - q)/q) is exact relative to log(p/q) only near p == q; an
                    # element on its own needs that elsewhere too (p << q), so there the
                    # difference of logs is taken, as the generic code does.
                    far = ~(np.abs(terms) < 0.5)
                    np.log1p(terms, out=terms)
                    if far.any():
                        terms[far] = np.log(pt[far]) - np.log(qt[far])
                    np.multiply(terms, pt, out=terms)
                    bad = ~np.isfinite(terms)
                    if not signs_ok:  # two negatives make a positive ratio: no NaN shows
                        bad |= (pt < 0) | (qt < 0)
                    if bad.any():
                        # inf is right for q == 0 < p, and from an infinite entry is not
                        flagged = True
                        terms[bad] = _agnostic.rel_entr(
                            pt[bad], qt[bad], validate=False, xp=_generic_np()
                        )
                    out_rows[r, c] = terms
        return flagged

    if any(_run(job, rows, n)) and validate:
        _check(("p", "q"), (p, q), shape, ())
    return out


def _native_rel_entr(views: Sequence[Array], out: Array, *, validate: bool) -> bool | None:
    """``out = rel_entr`` of two ``(rows, n)`` views by the compiled kernel, where it is built
    and takes them (one float32 or float64 dtype, rows contiguous): whether ``validate``
    then wants the public layer's checks to name a bad entry; None, with nothing written,
    where the tiles are to run instead.

    Elements the kernel leaves NaN (a subnormal, ``p == q == 0``, bad input) are redone by
    the generic code, a row at a time, so that the mask and the gathered copies stay the
    size of a row.
    """
    p, q = views
    if (
        _kernels() is None
        or not p.dtype == q.dtype == out.dtype
        or p.dtype not in _NATIVE_DTYPES
        or not all(_rows_contiguous(x) for x in views)
    ):
        return None
    assert _native is not None
    rows = out.shape[0]
    flagged = False
    if _native.rel_entr_rows(p, q, out, threads=kernel_threads(rows, p.size)):
        with np.errstate(all="ignore"):
            for r in range(rows):
                bad = np.isnan(out[r])
                if bad.any():
                    pr, qr = p[r][bad].astype(np.float64), q[r][bad].astype(np.float64)
                    good = (pr >= 0) & (qr >= 0) & np.isfinite(pr) & np.isfinite(qr)
                    flagged = flagged or not bool(good.all())
                    out[r][bad] = _agnostic.rel_entr(pr, qr, validate=False, xp=_generic_np())
    return flagged and validate


def _softmax_rows(x: Array, log_out: Array, out: Array) -> Array:
    """Row-wise ``log_out = log_softmax(x)`` and ``out = softmax(x)``, into scratch of
    ``x``'s shape, with one ``exp``; returns each row's maximum, which is not finite for a
    row holding NaN or ``+inf``, or no finite entry."""
    peak = x.max(axis=1)
    np.subtract(x, peak[:, None], out=log_out)
    np.exp(log_out, out=out)
    total = out.sum(axis=1)
    np.subtract(log_out, np.log(total)[:, None], out=log_out)
    np.divide(out, total[:, None], out=out)
    return peak


def _logit_terms_rows(log_p: Array, log_q: Array, q: Array, work: Array) -> Array:
    """Row sums of ``t = q*phi(p/q) = q*(d + d*E - E)``, ``d = log_p - log_q``,
    ``E = expm1(d)``: ``p*log(p/q) - p + q`` from log-probabilities, every term >= 0.

    ``q`` is ``exp(log_q)``; ``log_p``, ``log_q`` and ``work`` are overwritten. Rows that come
    out NaN or infinite (``-inf`` entries, an overflowing ``E``) are the caller's to redo.
    """
    d, bracket = log_p, log_q
    np.subtract(log_p, log_q, out=d)
    np.expm1(d, out=work)
    np.multiply(d, work, out=bracket)
    np.add(bracket, d, out=bracket)
    np.subtract(bracket, work, out=bracket)
    return _dot_rows(q, bracket)


@fuses(LOGITS)
def kl_div_logits(
    a: Array, b: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """As :func:`kldiv._agnostic.kl_div_logits`, fused: rows of any length compiled
    (:mod:`._native`) where it is built, else in NumPy tiles; rows longer than a tile
    streamed through the tiles (:func:`_long_logit_rows`)."""
    shape = v.broadcast_shape(("a", "b"), [tuple(a.shape), tuple(b.shape)])
    views = _all_as_rows((a, b), shape, axes)
    n = math.prod(shape[i] for i in axes)

    def generic() -> Array:
        if validate:
            for name, x in (("a", a), ("b", b)):
                v.check_logits(name, v.expand_to(x, len(shape), _generic_np()), axes, _generic_np())
        return _agnostic.kl_div_logits(a, b, axes=axes, keepdims=keepdims, validate=validate, xp=xp)

    if views is None or n == 0:
        return generic()
    a_rows, b_rows = views
    out = np.empty(a_rows.shape[0], dtype=np.result_type(a, b))
    compiled = _kernels() is not None and a.dtype == b.dtype and a.dtype in _NATIVE_DTYPES
    if compiled and all(_rows_contiguous(x) for x in views):
        flagged = _native_logit_rows(a_rows, b_rows, out)
    else:
        flagged = _tiled_logit_rows(a_rows, b_rows, out)
    if flagged and validate:
        generic()  # its checks name the problem
    return out.reshape(kept_shape(shape, axes, keepdims))


def _tiled_logit_rows(a_rows: Array, b_rows: Array, out: Array) -> bool:
    """:func:`_logit_rows`, or :func:`_long_logit_rows` for rows longer than a tile: True
    when a row holds NaN or ``+inf``, or no finite logit."""
    if a_rows.shape[1] > _tile():  # vocabulary-sized rows: streamed, in two passes
        return _long_logit_rows(a_rows, b_rows, out)
    return _logit_rows(a_rows, b_rows, out)


def _logit_rows(a_rows: Array, b_rows: Array, out: Array) -> bool:
    """Write ``out[r] = KL(softmax(a_rows[r]) || softmax(b_rows[r]))`` in NumPy tiles; True
    when a row holds NaN or ``+inf``, or no finite logit."""
    rows, n = a_rows.shape
    tile_rows, _ = _tile_shape(n)
    precise = out.dtype == np.float64

    def job(start: int, stop: int) -> bool:
        scratch = _Scratch()
        flagged = False
        with np.errstate(all="ignore"):
            for r in _blocks(start, stop, tile_rows):
                at = _load(a_rows, r, slice(None), scratch, 0)
                bt = _load(b_rows, r, slice(None), scratch, 1)
                la, lb, q, work = (scratch.tile(i, *at.shape) for i in range(2, 6))
                peaks = (_softmax_rows(at, la, work), _softmax_rows(bt, lb, q))
                flagged = flagged or not all(np.isfinite(peak).all() for peak in peaks)
                sums = _logit_terms_rows(la, lb, q, work)
                # The generic code, exact for both, redoes the rows the fast form cannot
                # take (not finite: -inf logits, overflow) and, for float64, those under
                # _LOGITS_EXACT_BELOW, where the rounding of each log-softmax is all of
                # d = log(p/q) for near-identical rows.
                redo = ~np.isfinite(sums)
                if precise:
                    redo |= sums < _LOGITS_EXACT_BELOW
                again = np.flatnonzero(redo)
                if again.size:
                    sums[again] = _generic_rows(_agnostic.kl_div_logits, at[again], bt[again])
                out[r] = np.where(sums < 0, 0.0, sums)  # the table's rule: always
        return flagged

    return any(_run(job, rows, n))


def _log_sum_exp_streamed(x: Array, r: int, scratch: _Scratch) -> float:
    """``log(sum(exp(x[r])))`` over column tiles, with an online maximum: the running sum is
    rescaled by ``exp(old - new)`` when a tile raises the maximum. NaN for a row holding NaN
    or ``+inf``, ``-inf`` for a row with no finite entry."""
    peak, total = -math.inf, 0.0
    for c in _blocks(0, x.shape[1], _tile()):
        t = _load(x, slice(r, r + 1), c, scratch, 0)
        top = float(t.max())
        if not top < math.inf:  # NaN or +inf
            return math.nan
        new = max(peak, top)
        if new == -math.inf:
            continue
        e = scratch.tile(1, *t.shape)
        np.subtract(t, new, out=e)
        np.exp(e, out=e)
        total = total * math.exp(peak - new) + float(e.sum())
        peak = new
    return peak + math.log(total) if total > 0 else peak


def _long_logit_rows(a_rows: Array, b_rows: Array, out: Array) -> bool:
    """Write ``out[r] = KL(softmax(a_rows[r]) || softmax(b_rows[r]))`` for rows longer than a
    tile, with scratch of a few tiles whatever the row: each row's two log-sum-exps first
    (:func:`_log_sum_exp_streamed`), then its terms, tile by tile, in the non-negative form
    of :func:`_logit_terms_rows`. True when a row holds NaN or ``+inf``, or no finite logit.

    A tile the fast form cannot take (``-inf`` logits: a zero probability; an overflow) has
    its terms taken by the generic code's, tile alone; float64 rows whose KL comes out below
    :data:`_LOGITS_EXACT_BELOW` are redone by the generic code whole, as in :func:`_logit_rows`.
    """
    rows, n = a_rows.shape
    precise = out.dtype == np.float64

    def job(start: int, stop: int) -> bool:
        scratch = _Scratch()
        flagged = False
        gx = _generic_np()
        with np.errstate(all="ignore"):
            for r in range(start, stop):
                lse_a = _log_sum_exp_streamed(a_rows, r, scratch)
                lse_b = _log_sum_exp_streamed(b_rows, r, scratch)
                if not (math.isfinite(lse_a) and math.isfinite(lse_b)):
                    flagged = True
                    out[r] = math.nan
                    continue
                total = 0.0
                for c in _blocks(0, n, _tile()):
                    at = _load(a_rows, slice(r, r + 1), c, scratch, 0)
                    bt = _load(b_rows, slice(r, r + 1), c, scratch, 1)
                    la, lb, q, work = (scratch.tile(i, *at.shape) for i in range(2, 6))
                    np.subtract(at, lse_a, out=la)
                    np.subtract(bt, lse_b, out=lb)
                    np.exp(lb, out=q)
                    part = float(_logit_terms_rows(la, lb, q, work)[0])
                    if not math.isfinite(part):
                        la_exact = at - lse_a
                        lb_exact = bt - lse_b
                        part = float(np.sum(_agnostic.logit_terms(la_exact, lb_exact, gx)))
                    total += part
                if precise and total < _LOGITS_EXACT_BELOW:
                    a_row, b_row = a_rows[r : r + 1], b_rows[r : r + 1]
                    total = float(_generic_rows(_agnostic.kl_div_logits, a_row, b_row)[0])
                out[r] = max(total, 0.0)
        return flagged

    return any(_run(job, rows, n))


# Float64 logit rows whose KL comes out below this are recomputed exactly. Above it the
# tiles' error, a rounding of each log-softmax entry (eps*|log p|) against d ~ sqrt(KL), stays
# under 1e-12 of the KL for logits of any size a float64 softmax keeps.
_LOGITS_EXACT_BELOW = 1e-4


# The logits kernel's scratch, all workers together: three chunks of a row each. A row that
# fits one chunk has its exponentials made once rather than twice (25% faster for rows of
# 131072), so the chunk is as large as this allows: 128 KiB of each input per worker on 2
# cores is 131072 float32 logits; on 16 cores 16384.
_LOGIT_SCRATCH_BYTES = 3 * 2**20


def _native_logit_rows(a_rows: Array, b_rows: Array, out: Array) -> bool:
    """As :func:`_tiled_logit_rows`, by one call of the compiled kernel on its own threads,
    with scratch of :data:`_LOGIT_SCRATCH_BYTES` at most in all, whatever the row. Rows it leaves
    NaN hold a logit that is not finite (``-inf`` for a class of probability 0 among them):
    the tiles redo those, with every convention and check."""
    assert _native is not None
    rows, n = a_rows.shape
    threads = kernel_threads(rows, a_rows.size)
    chunk = max(1024, _LOGIT_SCRATCH_BYTES // (3 * threads * a_rows.itemsize))

    def redo(again: Array, fixed: Array) -> bool:
        return _tiled_logit_rows(a_rows[again], b_rows[again], fixed)

    _native.kl_logit_rows(a_rows, b_rows, out, chunk=chunk, threads=threads)
    return _redo_lost_rows(out, n, redo)


@fuses(VALUES, NORMALISED, LOGITS)
def softmax_kl_loss(
    pred: Array,
    target: Array,
    *,
    norm_target: bool,
    xp: Namespace,
    check: Callable[[], None] | None = None,
) -> tuple[Array, Array]:
    """As :func:`kldiv._agnostic.softmax_kl_loss`: float32 and float64 rows by the compiled
    loss kernel (``loss_rows``: error and grad in one call, three passes per row) where it is
    built, else fused in tiles for rows of at most one tile, pred and target read once, grad
    written once, per row block; the generic code for longer rows.

    ``check``, where given, raises what :mod:`kldiv.loss`'s checks of pred and a float
    target refuse: the kernel checks as it goes (the logits, the target's entries and, for a
    distribution, its mass) and ``check`` runs only when it flags a row, to name the problem;
    without the kernel it runs first."""
    rows, n = pred.shape
    native = _kernels()
    if (
        native is not None
        and n > 0
        and pred.dtype == target.dtype
        and pred.dtype in (np.float32, np.float64)
        and _rows_contiguous(pred)
        and _rows_contiguous(target)
    ):
        grad = np.empty(pred.shape, dtype=pred.dtype)
        errors = np.empty(rows)
        tolerance = None
        if check is not None and not norm_target:
            tolerance = v.sum_tolerance(target.dtype, n, np)

        off = native.loss_rows(
            pred,
            target,
            grad,
            errors,
            1.0 / rows,
            norm_target,
            tolerance,
            threads=kernel_threads(rows, pred.size),
        )
        lost = np.isnan(errors)
        if check is not None and (off or lost.any()):
            check()  # names the problem; a row it passes (a -inf logit, say) is redone below
        if not lost.any():
            return np.asarray(math.fsum(errors)), grad
        # rows the kernel does not take (-inf logits, subnormal targets, bad input): the tiles
        again = np.flatnonzero(lost)
        error, grad[again] = _loss_rows(pred[again], target[again], norm_target, rows, xp)
        return np.asarray(math.fsum(errors[~lost]) + error), grad
    if check is not None:
        check()
    error, grad = _loss_rows(pred, target, norm_target, rows, xp)
    return np.asarray(error), grad


def softmax_kl_loss_labels(pred: Array, labels: Array, *, xp: Namespace) -> Any:
    """The loss of float32 or float64 rows ``pred`` of ``C*P`` logits (class-major) against
    integer ``labels`` of ``(rows, P)``, by the compiled kernel (``loss_label_rows``), which
    never makes the one-hot target: error sum and grad, as :func:`softmax_kl_loss` of that
    target.
    A label outside ``[0, C)`` makes its row's error and grad NaN (the caller checks labels
    first where it may). ``NotImplemented`` (the caller makes the one-hot target) without the
    kernel or for another dtype."""
    rows, n = pred.shape
    native = _kernels()
    if (
        native is None
        or n == 0
        or pred.dtype not in (np.float32, np.float64)
        or not _rows_contiguous(pred)
    ):
        return NotImplemented
    labels = np.ascontiguousarray(labels)  # of any integer type: the kernel reads them all
    grad = np.empty(pred.shape, dtype=pred.dtype)
    errors = np.empty(rows)

    native.loss_label_rows(
        pred, labels, grad, errors, 1 / rows, threads=kernel_threads(rows, pred.size)
    )
    lost = np.isnan(errors)
    if not lost.any():
        return np.asarray(math.fsum(errors)), grad
    # rows the kernel does not take: a logit that is not finite (the tiles redo those, on
    # their one-hot targets), or a label out of range (NaN)
    positions = labels.shape[1]
    classes = n // positions
    in_range = ((labels >= 0) & (labels < classes)).all(axis=1)
    again = np.flatnonzero(lost & in_range)
    error = math.fsum(errors[~lost])
    if again.size:
        hits = labels[again][:, None, :] == np.arange(classes)[:, None]
        target = hits.reshape(again.size, n) / np.float64(positions)
        part, grad[again] = _loss_rows(pred[again], target, False, rows, xp)
        error += part
    if not in_range.all():
        error = math.nan
        grad[~in_range] = np.nan
    return np.asarray(error), grad


def _loss_rows(
    pred: Array, target: Array, norm_target: bool, samples: int, xp: Namespace
) -> tuple[float, Array]:
    """The loss's error sum and grad for these rows of a batch of ``samples``, by the tiles
    for rows of at most one tile, else by the generic code."""
    rows, n = pred.shape
    if not 0 < n <= _tile():  # as for kl_div_logits: a longer row needs two passes
        error, grad = _agnostic.softmax_kl_loss(pred, target, norm_target=norm_target, xp=xp)
        return float(error), grad * (rows / samples)
    grad = np.empty(pred.shape, dtype=pred.dtype)
    tile_rows, _ = _tile_shape(n)
    # A zero target's log, -inf, becomes the most negative float: its term then comes out
    # exactly s (q*phi(0) = q) instead of NaN, with no mask.
    lowest = np.finfo(np.float64).min

    def job(start: int, stop: int) -> float:
        scratch = _Scratch()
        error = 0.0
        with np.errstate(all="ignore"):
            for r in _blocks(start, stop, tile_rows):
                pt = _load(pred, r, slice(None), scratch, 0)
                yt = _load(target, r, slice(None), scratch, 1)
                log_s, s, log_y, y, work = (scratch.tile(i, *pt.shape) for i in range(2, 7))
                _softmax_rows(pt, log_s, s)
                if norm_target:
                    _softmax_rows(yt, log_y, y)
                else:
                    y = yt
                    np.log(y, out=log_y)
                    np.maximum(log_y, lowest, out=log_y)
                    error += float(y.sum()) - y.shape[0]  # the target's own mass, as generic
                np.subtract(y, s, out=work)
                np.divide(work, samples, out=work)
                grad[r] = work

                def exact(bad: Array, pt: Array = pt, yt: Array = yt) -> Array:
                    gx = _generic_np()
                    log_s_bad = _agnostic.log_softmax(pt[bad], (1,), gx)
                    if norm_target:
                        log_y_bad = _agnostic.log_softmax(yt[bad], (1,), gx)
                    else:
                        log_y_bad = np.log(yt[bad])
                    return np.sum(_agnostic.logit_terms(log_y_bad, log_s_bad, gx), axis=1)

                part = _fix_rows(_logit_terms_rows(log_y, log_s, s, work), exact)
                error += float(part.sum())
        return error

    return sum(_run(job, rows, n)), grad
