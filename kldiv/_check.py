"""``kldiv check``: every installed library and every fast path against a float64 reference.

The references here are written out in NumPy float64 from the definitions, independently of
kldiv's own code (no call into kldiv), so that a fault in a fast path cannot also be in the
answer it is checked against. Each case is small, so the whole check takes a few seconds.

Paths checked, each where its library is installed:

- ``numpy``: ``short`` (the compiled short path, one kernel call for these small inputs,
  the defaults), ``pool`` (the short path's branch for large calls, by ``parallel_min=0``:
  the kernels, then the NumPy tiles' redo of the rows they leave), ``compiled`` (the full
  path through the compiled kernels, past the short path), ``tiles`` (the pure NumPy
  tiles, ``compiled=False``, with small tiles so that rows cross tile boundaries);
- ``array_api_strict``: the generic array-API code;
- ``torch``: the bridge of CPU tensors (and CUDA tensors where torch sees a GPU);
- ``jax``: ``eager`` and ``jit``, with 64-bit arrays switched on for float64;
- ``dask``: blocks of rows through ``map_blocks``;
- ``cupy``: the CUDA kernels, where a GPU is present.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

import kldiv
from kldiv import _funcs
from kldiv._table import DIVERGENCES

F64 = np.ndarray[Any, Any]
"""A NumPy array of floats: the float64 references, the inputs in their dtype."""

# every divergence of the table, in its order
FUNCTIONS = tuple(DIVERGENCES)

# Largest error accepted, relative to max(|reference|, FLOOR): float16 and float32 results
# are rounded once from float64 arithmetic (4.9e-4, 6e-8), and a path computing in float32
# would sum rows of 20000 terms with a few roundings each; float64 keeps about 1e-15 here
# (1e-12 for the elementwise terms of near-equal entries).
TOLERANCE = {"float16": 2e-3, "float32": 2e-5, "float64": 1e-10}
FLOOR = {"float16": 1e-4, "float32": 1e-6, "float64": 1e-12}


def available_gpu() -> tuple[ModuleType, str] | None:
    """CuPy and the name of its current device, or None without CuPy or a usable GPU.

    On Linux, a machine with no GPU device node at all is answered without importing CuPy,
    which takes most of a second.
    """
    if importlib.util.find_spec("cupy") is None:
        return None
    nodes = ("/dev/nvidiactl", "/dev/dxg", "/dev/kfd")
    if sys.platform.startswith("linux") and not any(os.path.exists(n) for n in nodes):
        return None
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        device = cupy.cuda.Device()
        name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"]
    except Exception:  # CuPy raises its own errors for a missing or broken driver
        return None
    return cupy, name.decode() if isinstance(name, bytes) else str(name)


# --- the float64 references, from the definitions -------------------------------------------


def _xlogy_ratio(p: F64, q: F64) -> F64:
    """``p * log(p / q)`` with ``0 * log(0 / q) = 0`` and ``p > 0, q = 0`` giving ``+inf``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        # log1p of the exact relative difference, not log(p) - log(q), which cancels for
        # p near q and would make the reference the less accurate side.
        terms = p * np.log1p((p - q) / q)
    return np.where(p == 0, 0.0, np.where(q == 0, np.inf, terms))


def _log_softmax(a: F64) -> F64:
    top = np.max(a, axis=-1, keepdims=True)
    shifted = a - top
    with np.errstate(divide="ignore"):
        return np.asarray(shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True)))


def _kl_logits(a: F64, b: F64) -> F64:
    la, lb = _log_softmax(a), _log_softmax(b)
    pa = np.exp(la)
    with np.errstate(invalid="ignore"):
        terms = np.where(pa == 0, 0.0, pa * (la - lb))
    return np.asarray(np.sum(terms, axis=-1))


def _entropy(p: F64) -> F64:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(-np.sum(np.where(p == 0, 0.0, p * np.log(p)), axis=-1))


def _cross_entropy(p: F64, q: F64) -> F64:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p == 0, 0.0, -p * np.log(q))
    return np.asarray(np.sum(terms, axis=-1))


def _js(p: F64, q: F64) -> F64:
    m = (p + q) / 2
    return np.asarray(
        (np.sum(_xlogy_ratio(p, m), axis=-1) + np.sum(_xlogy_ratio(q, m), axis=-1)) / 2
    )


REFERENCES: dict[str, Callable[..., F64]] = {
    "kl_div": lambda p, q: np.sum(_xlogy_ratio(p, q), axis=-1),
    "kl_div_logits": _kl_logits,
    "entropy": _entropy,
    "cross_entropy": _cross_entropy,
    "js_div": _js,
    "hellinger": lambda p, q: np.sqrt(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, axis=-1) / 2),
    "total_variation": lambda p, q: np.sum(np.abs(p - q), axis=-1) / 2,
    "rel_entr": _xlogy_ratio,
}

# --- the inputs -----------------------------------------------------------------------------


def _distributions(rng: np.random.Generator, rows: int, n: int, dtype: str) -> F64:
    """Random distributions, normalised in ``dtype`` so that kldiv's check accepts them; the
    reference then reads the very values kldiv reads, upcast."""
    x = rng.dirichlet(np.ones(n), size=rows).astype(dtype)
    return np.asarray(
        (x / x.sum(axis=-1, keepdims=True, dtype=np.float64).astype(dtype)).astype(dtype)
    )


def _with_zeros(rng: np.random.Generator, dtype: str) -> tuple[F64, F64]:
    """Zeros in ``p`` (no contribution), in both (none), and in ``q`` alone in the last row
    (an infinite KL and cross-entropy)."""
    p = rng.dirichlet(np.ones(9), size=6)
    q = rng.dirichlet(np.ones(9), size=6)
    p[0, :4] = 0
    p[1, ::2] = 0
    q[1, ::2] = 0
    p[2] = 0
    p[2, 3] = 1
    q[5, 0] = 0
    p = p / p.sum(axis=-1, keepdims=True)
    q = q / q.sum(axis=-1, keepdims=True)
    return p.astype(dtype), q.astype(dtype)


def _logit_gaps(rng: np.random.Generator, dtype: str) -> tuple[F64, F64]:
    """Logits with gaps that underflow exp (1e4), large offsets, and ``-inf`` entries."""
    a = rng.standard_normal((5, 12)) * 3
    b = rng.standard_normal((5, 12)) * 3
    a[0, 1:] -= 1e4
    b[1, 0] += 80
    a[2] += 1e3
    a[3, 5:] = -np.inf
    b[3, 7:] = -np.inf
    b[4, :2] = -np.inf
    return a.astype(dtype), b.astype(dtype)


@dataclass(frozen=True)
class Case:
    """One input pair (or one array) of one dtype, for some of the functions."""

    name: str
    dtype: str
    arrays: tuple[F64, F64]
    functions: tuple[str, ...]


def cases(seed: int = 20241) -> list[Case]:
    """The inputs: random rows, zeros, logit gaps and long rows, in every dtype (float16
    without long rows, whose entries of 1/20000 would be subnormal)."""
    rng = np.random.default_rng(seed)
    probabilities = tuple(f for f in FUNCTIONS if f != "kl_div_logits")
    out: list[Case] = []
    for dtype in TOLERANCE:
        random = (_distributions(rng, 7, 33, dtype), _distributions(rng, 7, 33, dtype))
        logits = (
            (rng.standard_normal((7, 33)) * 3).astype(dtype),
            (rng.standard_normal((7, 33)) * 3).astype(dtype),
        )
        out += [
            Case("random", dtype, random, probabilities),
            Case("random", dtype, logits, ("kl_div_logits",)),
            Case("zeros", dtype, _with_zeros(rng, dtype), probabilities),
            Case("logit gaps", dtype, _logit_gaps(rng, dtype), ("kl_div_logits",)),
        ]
        if dtype != "float16":
            long = (_distributions(rng, 3, 20000, dtype), _distributions(rng, 3, 20000, dtype))
            long_logits = (
                (rng.standard_normal((3, 20000)) * 3).astype(dtype),
                (rng.standard_normal((3, 20000)) * 3).astype(dtype),
            )
            out += [
                Case("long rows", dtype, long, probabilities),
                Case("long rows", dtype, long_logits, ("kl_div_logits",)),
            ]
    return out


# --- the paths ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastPath:
    """One way of calling kldiv: arrays in, a float64 NumPy array of the result out."""

    library: str
    name: str
    run: Callable[[str, tuple[F64, ...]], F64]
    dtypes: tuple[str, ...] = tuple(TOLERANCE)
    skip: tuple[str, ...] = ()
    """Cases not run on this path."""


def _call(name: str, arrays: tuple[Any, ...]) -> Any:
    return getattr(kldiv, name)(*arrays)


def _numpy_path(*, full: bool = False, **settings: Any) -> Callable[[str, tuple[F64, ...]], F64]:
    """A NumPy path under ``settings``: the public function, or with ``full`` the full path
    of its checks, dispatch and row views (``kldiv._funcs._call``), which the short path
    would otherwise take the place of for these plain arrays."""

    def run(name: str, arrays: tuple[F64, ...]) -> F64:
        with kldiv.options(**settings):
            if not full:
                return np.asarray(_call(name, arrays), dtype=np.float64)
            if DIVERGENCES[name].reduces:
                return np.asarray(_funcs._call(name, arrays, axis=-1), dtype=np.float64)
            return np.asarray(_funcs._call(name, arrays), dtype=np.float64)

    return run


def _strict_path() -> FastPath | None:
    if importlib.util.find_spec("array_api_strict") is None:
        return None
    import array_api_strict as xp

    def run(name: str, arrays: tuple[F64, ...]) -> F64:
        result = _call(name, tuple(xp.asarray(a) for a in arrays))
        return np.asarray(np.from_dlpack(result), dtype=np.float64)

    # The standard has no float16.
    return FastPath("array_api_strict", "generic", run, ("float32", "float64"))


def _torch_paths() -> list[FastPath]:
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    def on(device: str) -> Callable[[str, tuple[F64, ...]], F64]:
        def run(name: str, arrays: tuple[F64, ...]) -> F64:
            tensors = tuple(torch.from_numpy(np.array(a)).to(device) for a in arrays)
            return np.asarray(_call(name, tensors).cpu().numpy(), dtype=np.float64)

        return run

    paths = [FastPath("torch", "cpu", on("cpu"))]
    if torch.cuda.is_available():
        paths.append(FastPath("torch", "cuda", on("cuda")))
    return paths


def _jax_paths() -> list[FastPath]:
    if importlib.util.find_spec("jax") is None:
        return []
    import jax
    import jax.numpy as jnp

    # float64 arrays need JAX's 64-bit mode, off by default; this process is the check's own.
    jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]
    pairs = tuple(f for f in FUNCTIONS if f not in ("kl_div_logits", "entropy"))
    results: dict[int, dict[str, Any]] = {}

    def eager(name: str, arrays: tuple[F64, ...]) -> F64:
        return np.asarray(_call(name, tuple(jnp.asarray(a) for a in arrays)), dtype=np.float64)

    def together(p: Any, q: Any) -> dict[str, Any]:
        out = {name: getattr(kldiv, name)(p, q) for name in pairs}
        out["entropy"] = kldiv.entropy(p)
        return out

    def jit(name: str, arrays: tuple[F64, ...]) -> F64:
        # Compiling takes most of the check's time, so the functions of one pair of inputs
        # are compiled together, once, and entropy (given p alone) finds its result there.
        if name == "kl_div_logits" or (name == "entropy" and id(arrays[0]) not in results):
            result = jax.jit(getattr(kldiv, name))(*(jnp.asarray(a) for a in arrays))
            return np.asarray(result, dtype=np.float64)
        if id(arrays[0]) not in results:
            results[id(arrays[0])] = jax.jit(together)(*(jnp.asarray(a) for a in arrays))
        return np.asarray(results[id(arrays[0])][name], dtype=np.float64)

    # Long rows are the same program under jit as short ones, only longer, and compiling
    # it again would double the check's time.
    return [FastPath("jax", "eager", eager), FastPath("jax", "jit", jit, skip=("long rows",))]


def _dask_path() -> FastPath | None:
    if importlib.util.find_spec("dask") is None:
        return None
    import dask
    import dask.array as da

    def run(name: str, arrays: tuple[F64, ...]) -> F64:
        rows = arrays[0].shape[0]
        # rel_entr is elementwise: its columns are split too.
        columns = -1 if name != "rel_entr" else max(1, arrays[0].shape[-1] // 2)
        chunks = (max(1, rows // 2), columns)
        lazy = tuple(da.from_array(a, chunks=chunks) for a in arrays)  # type: ignore[no-untyped-call]
        with dask.config.set(scheduler="synchronous"):
            return np.asarray(_call(name, lazy).compute(), dtype=np.float64)

    return FastPath("dask", "blocks", run)


def _cupy_path() -> FastPath | None:
    gpu = available_gpu()
    if gpu is None:
        return None
    cupy = gpu[0]

    def run(name: str, arrays: tuple[F64, ...]) -> F64:
        result = _call(name, tuple(cupy.asarray(a) for a in arrays))
        return np.asarray(cupy.asnumpy(result), dtype=np.float64)

    return FastPath("cupy", "cuda", run)


LIBRARIES = ("numpy", "array_api_strict", "torch", "jax", "dask", "cupy")


def _broken(library: str, exc: Exception) -> FastPath:
    """A path for a library that is installed but fails to load: every check of it fails,
    saying why, which is what the check is for."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())

    def run(name: str, arrays: tuple[F64, ...]) -> F64:
        raise RuntimeError(f"cannot load {library}: {reason}")

    return FastPath(library, "import", run)


def paths(libraries: tuple[str, ...] = LIBRARIES) -> list[FastPath]:
    """Every path of ``libraries`` installed here, in the order of :data:`LIBRARIES`."""
    builders: dict[str, Callable[[], list[FastPath]]] = {
        "numpy": lambda: [
            FastPath("numpy", "short", _numpy_path()),
            FastPath("numpy", "pool", _numpy_path(parallel_min=0)),
            FastPath("numpy", "compiled", _numpy_path(full=True, parallel_min=0)),
            FastPath("numpy", "tiles", _numpy_path(compiled=False, parallel_min=0, tile=64)),
        ],
        "array_api_strict": lambda: [p for p in (_strict_path(),) if p is not None],
        "torch": _torch_paths,
        "jax": _jax_paths,
        "dask": lambda: [p for p in (_dask_path(),) if p is not None],
        "cupy": lambda: [p for p in (_cupy_path(),) if p is not None],
    }
    found: list[FastPath] = []
    for library in LIBRARIES:
        if library in libraries:
            try:
                found += builders[library]()
            except Exception as exc:  # a broken install: reported, not raised
                found.append(_broken(library, exc))
    return found


# --- the check ------------------------------------------------------------------------------


def error(got: F64, expected: F64, dtype: str) -> float:
    """The largest ``|got - expected| / max(|expected|, FLOOR)``; 0 where both are the same
    infinity, infinite where one is NaN or infinite and the other not, or shapes differ."""
    if got.shape != expected.shape:
        return math.inf
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    with np.errstate(invalid="ignore", over="ignore"):
        errors = np.abs(got - expected) / np.maximum(np.abs(expected), FLOOR[dtype])
    errors = np.where(same, 0.0, np.where(np.isnan(errors), np.inf, errors))
    return float(np.max(errors, initial=0.0))


@dataclass
class Row:
    """The result of one path, function and dtype over every case."""

    library: str
    path: str
    function: str
    dtype: str
    error: float = 0.0
    worst: str = ""
    failure: str = ""

    @property
    def passed(self) -> bool:
        return not self.failure and self.error <= TOLERANCE[self.dtype]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Libraries warn about what the check does on purpose (infinite results, 64-bit mode);
    the table is the report."""
    import warnings

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def run_check(
    found: list[FastPath] | None = None, progress: Callable[[], None] | None = None
) -> list[Row]:
    """Every path, function and dtype against the references; one :class:`Row` each.

    Parameters
    ----------
    found : list of FastPath, optional
        The paths to check; :func:`paths` by default.
    progress : callable, optional
        Called once per path and dtype done, for a progress bar.
    """
    with _quiet():
        found = paths() if found is None else found
        inputs = cases()
        rows: list[Row] = []
        for path in found:
            for dtype in path.dtypes:
                for function in FUNCTIONS:
                    row = Row(path.library, path.name, function, dtype)
                    for case in inputs:
                        if (
                            case.dtype != dtype
                            or function not in case.functions
                            or case.name in path.skip
                        ):
                            continue
                        arrays = case.arrays[:1] if function == "entropy" else case.arrays
                        expected = REFERENCES[function](*(a.astype(np.float64) for a in arrays))
                        try:
                            got = path.run(function, arrays)
                        except Exception as exc:  # any failure of a path is what is reported
                            row.failure = f"{case.name}: {type(exc).__name__}: {exc}"
                            row.failure = " ".join(row.failure.split())
                            break
                        err = error(got, expected, dtype)
                        if err >= row.error:
                            row.error, row.worst = err, case.name
                    rows.append(row)
                if progress is not None:
                    progress()
    return rows
