"""kldiv on each array library against that library's own naive expression.

Run ``python benchmarks/bench_libraries.py [--quick] [--repeat N] [--out DIR]``.

Method
------
Each case times two sides, kldiv and the one-liner a user of that library would write, on
the same arrays in this one process. Each side is called once to warm up (JAX compiles
there), and its result is compared with the other's; then the sides take turns, the first
side alternating between rounds, with the garbage collector off. A sample is one call (or,
for the per-call cases, the mean of a burst of calls); the report gives medians and the
ratio kldiv / naive (below 1: kldiv is faster). Lazy results (Dask) and asynchronous ones
(JAX) are waited for inside the sample: ``.compute()``, ``block_until_ready()``.

Cases (float32 ``(4096, 1000)`` distributions along the last axis unless said):

* ``torch``: ``kldiv.kl_div(p, q)`` against ``F.kl_div(q.log(), p, reduction="none").sum(-1)``
  on CPU tensors; ``torch-backward``: the same plus ``.sum().backward()`` into both inputs.
* ``jax-jit``: ``jax.jit(kldiv.kl_div)`` against the jitted ``jnp.sum(p * jnp.log(p / q), -1)``;
  ``jax-eager``: both uncompiled.
* ``dask``: ``(32768, 1000)`` in chunks of 4096 rows, the threaded scheduler, against
  ``(p * da.log(p / q)).sum(-1)``; both computed. A third side, the floor, reads both inputs
  through Dask and computes nothing else, ``(p.sum(-1) + q.sum(-1)).compute()``: what Dask's
  graph and chunks cost any side.
* ``numpy-2x3`` and ``torch-2x3``: per-call time on a ``(2, 3)`` float64 input against
  ``np.sum(p * np.log(p / q), -1)`` and its torch twin.
* Sizes between (no target; kldiv is to be no slower than the one-liner at any size):
  ``jax-eager-2x3`` as the two above, and ``numpy-``, ``torch-`` and ``jax-eager-`` at
  ``64x1000`` and ``256x1000`` float32, each sample a burst of back-to-back calls, as in a
  loop.

The targets are those of issue 10; NumPy's own workloads are ``bench_cpu.py``'s.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_cpu.py

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    Target,
    gc_off,
    machine,
    machine_lines,
    markdown_table,
    targets_table,
    write_outputs,
)

import kldiv

DEFAULT_OUT = Path(__file__).parent / "out"
Side = Callable[[], Any]


@dataclass
class Case:
    name: str
    description: str
    kldiv: Side
    naive: Side
    burst: int = 1  # calls per sample: many for the per-call cases
    rtol: float = 1e-4  # how far the two results may differ
    # reading both inputs through the library and nothing else: what any side pays
    floor: Side | None = None


def distributions(shape: tuple[int, int], seed: int, dtype: Any = np.float32) -> np.ndarray:
    x = np.random.default_rng(seed).random(shape, dtype=np.float64) + 0.01
    return (x / x.sum(axis=-1, keepdims=True)).astype(dtype)


def torch_cases(shape: tuple[int, int]) -> list[Case]:
    import torch
    import torch.nn.functional as F

    p, q = (torch.from_numpy(distributions(shape, seed)) for seed in (0, 1))
    pg, qg = p.clone().requires_grad_(), q.clone().requires_grad_()

    def backward(f: Callable[[Any, Any], Any]) -> Side:
        def run() -> Any:
            pg.grad = qg.grad = None
            out = f(pg, qg)
            out.sum().backward()
            return torch.cat([pg.grad.ravel(), qg.grad.ravel()])

        return run

    def naive(a: Any, b: Any) -> Any:
        return F.kl_div(b.log(), a, reduction="none").sum(-1)

    return [
        Case("torch", "torch CPU kl_div", lambda: kldiv.kl_div(p, q), lambda: naive(p, q)),
        Case(
            "torch-backward",
            "torch CPU kl_div, forward and backward",
            backward(kldiv.kl_div),
            backward(naive),
        ),
    ]


def jax_cases(shape: tuple[int, int]) -> list[Case]:
    import jax
    import jax.numpy as jnp

    p, q = (jnp.asarray(distributions(shape, seed)) for seed in (0, 1))

    def naive(a: Any, b: Any) -> Any:
        return jnp.sum(a * jnp.log(a / b), axis=-1)

    fast, slow = jax.jit(kldiv.kl_div), jax.jit(naive)
    return [
        Case(
            "jax-jit",
            "JAX kl_div under jit",
            lambda: fast(p, q).block_until_ready(),
            lambda: slow(p, q).block_until_ready(),
        ),
        Case(
            "jax-eager",
            "JAX kl_div, eager",
            lambda: kldiv.kl_div(p, q).block_until_ready(),
            lambda: naive(p, q).block_until_ready(),
        ),
    ]


def dask_cases(rows: int, chunk: int) -> list[Case]:
    import dask
    import dask.array as da

    dask.config.set(scheduler="threads")
    p, q = (da.from_array(distributions((rows, 1000), s), chunks=(chunk, 1000)) for s in (0, 1))
    return [
        Case(
            "dask",
            f"Dask kl_div, ({rows}, 1000) in chunks of {chunk} rows",
            lambda: kldiv.kl_div(p, q).compute(),
            lambda: (p * da.log(p / q)).sum(-1).compute(),
            floor=lambda: (p.sum(-1) + q.sum(-1)).compute(),
        )
    ]


def per_call_cases() -> list[Case]:
    import torch

    p = np.array([[0.25, 0.1, 0.65], [0.8, 0.15, 0.05]])
    q = np.array([[0.7, 0.2, 0.1], [0.15, 0.8, 0.05]])
    tp, tq = torch.from_numpy(p), torch.from_numpy(q)
    return [
        Case(
            "numpy-2x3",
            "NumPy (2, 3) float64, per call",
            lambda: kldiv.kl_div(p, q),
            lambda: np.sum(p * np.log(p / q), -1),
            burst=2000,
            rtol=1e-12,
        ),
        Case(
            "torch-2x3",
            "torch (2, 3) float64, per call",
            lambda: kldiv.kl_div(tp, tq),
            lambda: torch.sum(tp * torch.log(tp / tq), -1),
            burst=2000,
            rtol=1e-12,
        ),
    ]


def size_cases(shapes: Sequence[tuple[int, int]]) -> list[Case]:
    """Each library's one-liner and kldiv at sizes between the per-call cases and the large
    ones (float32; ``(2, 3)`` float64 for JAX), a burst of back-to-back calls a sample."""
    out = _sizes_of((2, 3), np.float64, ["jax-eager"])  # numpy-2x3 and torch-2x3 above
    for shape in shapes:
        out += _sizes_of(shape, np.float32, ["numpy", "torch", "jax-eager"])
    return out


def _sizes_of(shape: tuple[int, int], dtype: Any, libraries: Sequence[str]) -> list[Case]:
    import jax.numpy as jnp
    import torch

    p, q = (distributions(shape, seed, dtype) for seed in (0, 1))
    tp, tq = torch.from_numpy(p), torch.from_numpy(q)
    jp, jq = jnp.asarray(p), jnp.asarray(q)
    sides = {
        "numpy": (lambda: kldiv.kl_div(p, q), lambda: np.sum(p * np.log(p / q), -1)),
        "torch": (lambda: kldiv.kl_div(tp, tq), lambda: torch.sum(tp * torch.log(tp / tq), -1)),
        "jax-eager": (
            lambda: kldiv.kl_div(jp, jq).block_until_ready(),
            lambda: jnp.sum(jp * jnp.log(jp / jq), -1).block_until_ready(),
        ),
    }
    burst = 2000 if p.size < 100 else max(5, 2_000_000 // p.size)
    what = f"({shape[0]}, {shape[1]}) {np.dtype(dtype).name}, back to back"
    return [
        Case(f"{lib}-{shape[0]}x{shape[1]}", f"{lib} {what}", *sides[lib], burst=burst, rtol=1e-5)
        for lib in libraries
    ]


def cases(quick: bool, only: Sequence[str]) -> list[Case]:
    shape = (256, 100) if quick else (4096, 1000)
    rows, chunk = (2048, 512) if quick else (32768, 4096)
    every: list[Case] = []
    for make in (
        lambda: torch_cases(shape),
        lambda: jax_cases(shape),
        lambda: dask_cases(rows, chunk),
        per_call_cases,
        lambda: size_cases([(16, 100)] if quick else [(64, 1000), (256, 1000)]),
    ):
        every.extend(make())
    return [c for c in every if not only or c.name in only]


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().numpy()
    return np.asarray(x, dtype=np.float64)


def run_case(case: Case, repeat: int) -> dict[str, Any]:
    warm = {"kldiv": case.kldiv(), "naive": case.naive()}
    got, expected = (_as_numpy(warm[k]) for k in ("kldiv", "naive"))
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    agree = bool(np.allclose(got, expected, rtol=case.rtol, atol=case.rtol * scale))
    sides = [("kldiv", case.kldiv), ("naive", case.naive)]
    if case.floor is not None:
        case.floor()
        sides.append(("floor", case.floor))
    samples: dict[str, list[float]] = {name: [] for name, _ in sides}
    gc.collect()  # once, before the case's samples
    with gc_off():
        for r in range(repeat):
            for name, side in sides[r % len(sides) :] + sides[: r % len(sides)]:
                start = time.perf_counter()
                for _ in range(case.burst):
                    side()
                samples[name].append((time.perf_counter() - start) / case.burst)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "description": case.description,
        "median_s": medians,
        "samples_s": samples,
        "ratio": medians["kldiv"] / medians["naive"],
        "results_agree": agree,
    }


LIMITS = {
    "torch": 0.5,
    "torch-backward": 1.0,
    "jax-jit": 2.0,
    "jax-eager": 3.0,
    "dask": 0.7,
    "numpy-2x3": 3.0,
    "torch-2x3": 4.0,
}


def targets(results: dict[str, Any]) -> list[Target]:
    return [
        Target(
            f"{name}: kldiv / naive",
            results[name]["ratio"] if name in results else None,
            "<=",
            limit,
        )
        for name, limit in LIMITS.items()
    ]


def _time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


def report(data: dict[str, Any], goals: list[Target]) -> str:
    rows = [
        [
            name,
            r["description"],
            _time(r["median_s"]["kldiv"]),
            _time(r["median_s"]["naive"]),
            f"{r['ratio']:.2f}",
            _time(r["median_s"]["floor"]) if "floor" in r["median_s"] else "",
            "yes" if r["results_agree"] else "NO",
        ]
        for name, r in data["cases"].items()
    ]
    header = ["case", "what", "kldiv", "naive", "ratio", "floor (read only)", "agree"]
    return (
        "\n\n".join(
            [
                "# kldiv against each library's naive expression",
                markdown_table(header, rows),
                "## Targets",
                targets_table(goals, ".2f"),
                "## Machine",
                "\n".join(machine_lines(data["machine"])),
            ]
        )
        + "\n"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 repeats")
    parser.add_argument("--repeat", type=int, default=None, help="samples per side (15)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--case", action="append", default=[], help="run only these cases")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 15)
    data: dict[str, Any] = {"machine": machine(), "repeat": repeat, "cases": {}}
    for case in cases(args.quick, args.case):
        data["cases"][case.name] = run_case(case, repeat)
        print(f"{case.name}: ratio {data['cases'][case.name]['ratio']:.2f}", flush=True)
    goals = targets(data["cases"])
    data["targets"] = [t.as_dict() for t in goals]
    text = report(data, goals)
    write_outputs(args.out, "bench_libraries", data, text)
    print(text)
    return data


if __name__ == "__main__":
    main()
