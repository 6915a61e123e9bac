"""GPU speed of kldiv's CuPy kernels against the naive CuPy expression, as bandwidth.

Run ``python benchmarks/bench_gpu.py [--quick] [--repeat N]`` on a machine with a CUDA GPU
and CuPy. Without one it prints that it cannot run and exits 0: it never reports a number it
did not measure.

Method
------
Workloads are strictly positive rows along the last axis, normalised, from a fixed seed, made
on the device: W1 ``(4096, 1000)`` float32, W2 the same in float64, W3 ``(64, 32000)``
float32, W4 ``(1_000_000, 10)`` float32, W5 ``(16, 1_000_000)`` float32 (few long rows: the
kernels split each across blocks), W1-logits (``3 * standard normal`` logits of W1's shape),
W2-logits the same in float64, WV-logits ``(16, 131072)`` float32 (vocabulary-sized rows, split
too), W1's rows through ``entropy``, ``cross_entropy``, ``js_div``, ``hellinger``,
``total_variation`` and ``rel_entr`` (elementwise), and W1-loss, ``KLDivergence()`` on
W1-logits' ``pred`` against W1's ``target`` (error and grad), W2-loss the same in float64.
The names are those of ``benchmarks/bench_cpu.py``. ``--quick`` divides the row counts by 16
(not below 1).

Sides: ``kernel`` is the CuPy backend's ``kl_div`` (``kl_div_logits``) called directly, with
``validate=False``: one kernel launch. ``public`` is ``kldiv.kl_div(p, q)`` with its defaults,
so the public layer's value checks (extra passes over the inputs) and whichever backend the
dispatch table names for CuPy are included; the line above the table says which that is.
``naive`` is ``cp.sum(p * cp.log(p / q), axis=-1)`` (four kernels, three temporaries of the
input's size); for logits, ``cupyx.scipy.special.log_softmax`` of both and
``cp.sum(cp.exp(la) * (la - lb), axis=-1)``; for the loss, ``log_softmax`` of ``pred``, the
error ``sum(y*(log y - log s))`` and the grad ``(y - s)/N``; for the other functions their
textbook CuPy expression. Where a function has no CuPy kernel (``getattr`` of the backend finds
none), its ``public`` side is the generic code, and the reference.

Each side is run once to warm up (compiling its kernels) and checked against ``kernel``'s
result; then ``cupyx.profiler.benchmark`` times ``--repeat`` calls with CUDA events and the
median GPU time is reported. Bandwidth is the *useful* traffic, the bytes a side must move at
least (each input read once, the result written once: a row's value, ``rel_entr``'s array,
the loss's grad), divided by the median time, for every
side alike: a side that moves more bytes than it must shows as a lower figure. The fraction of
peak divides that by the device's nominal memory bandwidth, ``2 * memory clock * bus width``
from the device attributes (``cudaDevAttrMemoryClockRate``, ``cudaDevAttrGlobalMemoryBusWidth``);
where a CUDA version no longer reports them, the fraction is "n/a".
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = Any


def _gpu() -> Any:
    """The ``cupy`` module if a CUDA GPU can be used through it, else None."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # no CuPy, no driver, no device: all mean nothing to measure on
        pass
    return None


@dataclass(frozen=True)
class Workload:
    name: str
    shape: tuple[int, int]
    dtype: str
    logits: bool = False
    function: str = "kl_div"


WORKLOADS = (
    Workload("W1", (4096, 1000), "float32"),
    Workload("W2", (4096, 1000), "float64"),
    Workload("W3", (64, 32000), "float32"),
    Workload("W4", (1_000_000, 10), "float32"),
    Workload("W5", (16, 1_000_000), "float32"),
    Workload("W1-logits", (4096, 1000), "float32", logits=True),
    Workload("W2-logits", (4096, 1000), "float64", logits=True),
    Workload("WV-logits", (16, 131_072), "float32", logits=True),
    *(
        Workload(f"W1-{name}", (4096, 1000), "float32", function=name)
        for name in (
            "entropy",
            "cross_entropy",
            "js_div",
            "hellinger",
            "total_variation",
            "rel_entr",
            "loss",
        )
    ),
    Workload("W2-loss", (4096, 1000), "float64", function="loss"),
)

# The textbook CuPy expression of each function besides kl_div
NAIVE: dict[str, Callable[[Any, Array, Array], Array]] = {
    "entropy": lambda cp, p, q: -cp.sum(p * cp.log(p), axis=-1),
    "cross_entropy": lambda cp, p, q: -cp.sum(p * cp.log(q), axis=-1),
    "js_div": lambda cp, p, q: (
        (
            cp.sum(p * cp.log(2 * p / (p + q)), axis=-1)
            + cp.sum(q * cp.log(2 * q / (p + q)), axis=-1)
        )
        / 2
    ),
    "hellinger": lambda cp, p, q: cp.sqrt(cp.sum((cp.sqrt(p) - cp.sqrt(q)) ** 2, axis=-1) / 2),
    "total_variation": lambda cp, p, q: cp.sum(cp.abs(p - q), axis=-1) / 2,
    "rel_entr": lambda cp, p, q: p * cp.log(p / q),
}


def peak_bandwidth(cp: Any) -> float | None:
    """Nominal memory bandwidth of the current device in bytes/s, from its attributes."""
    runtime = cp.cuda.runtime
    device = cp.cuda.Device().id
    try:
        clock_khz = runtime.deviceGetAttribute(runtime.cudaDevAttrMemoryClockRate, device)
        bus_bits = runtime.deviceGetAttribute(runtime.cudaDevAttrGlobalMemoryBusWidth, device)
    except Exception:  # an attribute this CUDA version no longer reports
        return None
    if not clock_khz or not bus_bits:
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8


def sides(cp: Any, workload: Workload) -> dict[str, Callable[[Array, Array], Array]]:
    import array_api_compat.cupy as xp

    import kldiv
    from kldiv._backends import cupy as _cupy_backend

    if workload.logits:
        from cupyx.scipy.special import log_softmax

        def naive_logits(a: Array, b: Array) -> Array:
            la, lb = log_softmax(a, axis=-1), log_softmax(b, axis=-1)
            return cp.sum(cp.exp(la) * (la - lb), axis=-1)

        return {
            "kernel": lambda a, b: _cupy_backend.kl_div_logits(
                a, b, axes=(1,), keepdims=False, validate=False, xp=xp
            ),
            "public": kldiv.kl_div_logits,
            "naive": naive_logits,
        }
    name = workload.function
    if name == "loss":
        from cupyx.scipy.special import log_softmax

        def naive_loss(pred: Array, target: Array) -> Array:
            log_s = log_softmax(pred, axis=-1)
            log_y = cp.log(cp.where(target > 0, target, 1))
            grad = (target - cp.exp(log_s)) / pred.shape[0]
            return cp.sum(target * (log_y - log_s)), grad

        return {
            "kernel": lambda pred, target: _cupy_backend.softmax_kl_loss(
                pred, target, norm_target=False, xp=xp
            ),
            "public": lambda pred, target: kldiv.KLDivergence()(pred, target),
            "naive": naive_loss,
        }
    if name == "rel_entr":
        return {
            "kernel": lambda p, q: _cupy_backend.rel_entr(p, q, validate=False, xp=xp),
            "public": kldiv.rel_entr,
            "naive": lambda p, q: NAIVE[name](cp, p, q),
        }
    if name != "kl_div":
        arity = 1 if name == "entropy" else 2
        out: dict[str, Callable[[Array, Array], Array]] = {}
        kernel = getattr(_cupy_backend, name, None)
        if kernel is not None:
            # the backend's hellinger is the squared distance; the public layer takes the root
            finish = cp.sqrt if name == "hellinger" else (lambda x: x)
            out["kernel"] = lambda p, q: finish(
                kernel(*(p, q)[:arity], axes=(1,), keepdims=False, validate=False, xp=xp)
            )
        public = getattr(kldiv, name)
        out["public"] = lambda p, q: public(*(p, q)[:arity])
        out["naive"] = lambda p, q: NAIVE[name](cp, p, q)
        return out
    return {
        "kernel": lambda p, q: _cupy_backend.kl_div(
            p, q, axes=(1,), keepdims=False, validate=False, xp=xp
        ),
        "public": kldiv.kl_div,
        "naive": lambda p, q: cp.sum(p * cp.log(p / q), axis=-1),
    }


def inputs(cp: Any, workload: Workload, rows_divisor: int) -> tuple[Array, Array]:
    rng = cp.random.default_rng(0)
    shape = (max(1, workload.shape[0] // rows_divisor), workload.shape[1])
    if workload.function == "loss":  # logits against a distribution
        pred = 3 * rng.standard_normal(shape, dtype=workload.dtype)
        target = rng.uniform(0.01, 1.0, shape).astype(workload.dtype)
        return pred, target / target.sum(axis=-1, keepdims=True)
    if workload.logits:
        return tuple(3 * rng.standard_normal(shape, dtype=workload.dtype) for _ in range(2))
    pair = []
    for _ in range(2):
        x = rng.uniform(0.01, 1.0, shape).astype(workload.dtype)
        pair.append(x / x.sum(axis=-1, keepdims=True))
    return pair[0], pair[1]


def _useful_bytes(workload: Workload, p: Array, q: Array) -> int:
    """The bytes a side must move at least: its inputs read once, its outputs written once."""
    read = p.nbytes + (0 if workload.function == "entropy" else q.nbytes)
    if workload.function in ("rel_entr", "loss"):  # the elementwise result, the grad
        return read + p.nbytes
    return read + p.shape[0] * p.itemsize


def _value(result: Any) -> Array:
    """The value a side is compared on: the loss's error, of its (error, grad)."""
    return result[0] if isinstance(result, tuple) else result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/16 of the rows, 5 repeats")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per side")
    args = parser.parse_args(argv)
    cp = _gpu()
    if cp is None:
        print("bench_gpu: no CUDA GPU usable through CuPy here, so nothing can be measured.")
        return 0
    import array_api_compat.cupy as xp
    from cupyx.profiler import benchmark

    from kldiv import _dispatch

    repeat = args.repeat or (5 if args.quick else 50)
    peak = peak_bandwidth(cp)
    properties = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = (
        properties["name"].decode() if isinstance(properties["name"], bytes) else properties["name"]
    )
    print(
        f"device: {name}, nominal peak bandwidth: " + (f"{peak / 1e9:.0f} GB/s" if peak else "n/a")
    )
    impl = _dispatch.implementation("kl_div", xp).func
    print(f"kldiv.kl_div on CuPy dispatches to: {impl.__module__}.{impl.__name__}")
    print(f"median of {repeat} timed calls per side, CUDA events\n")
    print("| workload | side | median ms | useful GB/s | of peak | max rel. diff from kernel |")
    # (from the public side where a function has no CuPy kernel)
    print("| --- | --- | --- | --- | --- | --- |")
    for workload in WORKLOADS:
        p, q = inputs(cp, workload, 16 if args.quick else 1)
        useful_bytes = _useful_bytes(workload, p, q)
        results = {}
        for side, func in sides(cp, workload).items():
            results[side] = _value(func(p, q))  # warm-up: compiles the side's kernels
            reference = results.get("kernel", results["public"])
            diff = float(cp.max(cp.abs(results[side] - reference) / cp.abs(reference)))
            timing = benchmark(func, (p, q), n_repeat=repeat, n_warmup=1)
            seconds = float(np.median(timing.gpu_times[0]))
            bandwidth = useful_bytes / seconds
            fraction = f"{bandwidth / peak:.0%}" if peak else "n/a"
            print(
                f"| {workload.name} {p.shape} {workload.dtype} | {side} | {seconds * 1e3:.3f} | "
                f"{bandwidth / 1e9:.0f} | {fraction} | {diff:.1e} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
