"""``kldiv bench``: kldiv against the naive NumPy expression on this CPU, in one process.

A compact version of ``benchmarks/bench_cpu.py`` (which is not installed with the package):
a few workloads, each side called once to warm up and to have its result compared with
kldiv's, then the sides take turns, repeat ``r`` starting at side ``r mod k``, so that a
burst of noise on a shared machine hits every side alike; the garbage collector is off while
timing, as in :mod:`timeit`. A sample is one call; the result is the median of the samples.

Workloads (``--quick``: the same kinds at ``(256, 100)``):

- ``W1``: ``kl_div`` of ``(4096, 1000)`` float32 probabilities, against
  ``np.sum(p * np.log(p / q), axis=-1)``;
- ``W1-logits``: ``kl_div_logits`` of float32 logits, against ``log_softmax`` written in
  NumPy and ``np.sum(np.exp(la) * (la - lb), -1)``;
- ``W1-entropy``: ``entropy``, against ``-np.sum(p * np.log(p), -1)``;
- ``W1-loss``: ``KLDivergence()(pred, target)``, error and grad, against the same in NumPy.

PyTorch's ``F.kl_div`` (and ``backward`` for the loss) is a side where torch is installed, on
tensors made before timing, at PyTorch's own thread count.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

import kldiv

BASELINE = "numpy"
"""The side every ratio divides by: the naive NumPy expression."""

# A result further than this from kldiv's, relative, is reported: a side that computed
# something else cannot pass for a fast one. float32 rounding is about 1e-7.
_AGREEMENT = 1e-3

Side = Callable[[], Any]


@dataclass(frozen=True)
class Workload:
    """One benchmark: ``kind`` of ``(rows, n)`` inputs of ``dtype``."""

    name: str
    kind: str
    shape: tuple[int, int]
    dtype: str = "float32"


def workloads(quick: bool) -> list[Workload]:
    """The workloads: W1's shape, or a small one for ``quick``."""
    shape = (256, 100) if quick else (4096, 1000)
    return [
        Workload("W1", "probabilities", shape),
        Workload("W1-logits", "logits", shape),
        Workload("W1-entropy", "entropy", shape),
        Workload("W1-loss", "loss", shape),
    ]


@dataclass
class Result:
    """Median seconds per call of each side of one workload, and the disagreements found."""

    workload: Workload
    times: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    def ratio(self, side: str) -> float | None:
        """``side``'s median time over the baseline's: below 1 is faster."""
        if side not in self.times or BASELINE not in self.times:
            return None
        return self.times[side] / self.times[BASELINE]


def _distributions(rng: np.random.Generator, shape: tuple[int, int], dtype: str) -> Any:
    x = rng.random(shape, dtype=np.float64) + 0.01
    x /= x.sum(axis=-1, keepdims=True)
    return x.astype(dtype)


def _log_softmax(a: Any) -> Any:
    shifted = a - np.max(a, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _naive_loss(pred: Any, target: Any) -> Any:
    """The loss as one writes it in NumPy: ``sum(y * (log y - log s)) / N`` and its grad."""
    log_s = _log_softmax(pred)
    error = np.sum(target * (np.log(target) - log_s)) / pred.shape[0]
    grad = (target - np.exp(log_s)) / pred.shape[0]
    return error, grad


def _torch() -> ModuleType | None:
    if importlib.util.find_spec("torch") is None:
        return None
    # PyTorch's OpenMP threads otherwise spin after each call and take the cores from the
    # next side of the round; only read before torch first loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    return torch


def _sides(w: Workload, rng: np.random.Generator) -> dict[str, Side]:
    """The calls to time for ``w``: kldiv, naive NumPy, and PyTorch where installed."""
    torch = _torch()
    if w.kind in ("probabilities", "entropy", "loss"):
        x, y = _distributions(rng, w.shape, w.dtype), _distributions(rng, w.shape, w.dtype)
    if w.kind in ("logits", "loss"):
        x = (rng.standard_normal(w.shape) * 3).astype(w.dtype)
    if w.kind == "logits":
        y = (rng.standard_normal(w.shape) * 3).astype(w.dtype)
    sides: dict[str, Side]
    if w.kind == "probabilities":
        sides = {
            "kldiv": lambda: kldiv.kl_div(x, y),
            BASELINE: lambda: np.sum(x * np.log(x / y), axis=-1),
        }
    elif w.kind == "logits":
        sides = {
            "kldiv": lambda: kldiv.kl_div_logits(x, y),
            BASELINE: lambda: np.sum(
                np.exp(_log_softmax(x)) * (_log_softmax(x) - _log_softmax(y)), -1
            ),
        }
    elif w.kind == "entropy":
        sides = {"kldiv": lambda: kldiv.entropy(x), BASELINE: lambda: -np.sum(x * np.log(x), -1)}
    else:
        loss = kldiv.KLDivergence()
        sides = {"kldiv": lambda: loss(x, y)[0], BASELINE: lambda: _naive_loss(x, y)[0]}
    if torch is not None:
        sides["torch"] = _torch_side(torch, w.kind, x, y)
    return sides


def _torch_side(torch: Any, kind: str, x: Any, y: Any) -> Side:
    import torch.nn.functional as F

    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    if kind == "probabilities":
        return lambda: F.kl_div(ty.log(), tx, reduction="none").sum(-1)
    if kind == "logits":
        return lambda: F.kl_div(
            F.log_softmax(ty, -1), F.log_softmax(tx, -1), log_target=True, reduction="none"
        ).sum(-1)
    if kind == "entropy":
        return lambda: torch.special.entr(tx).sum(-1)

    def loss() -> Any:
        pred = tx.clone().requires_grad_(True)
        value = F.kl_div(F.log_softmax(pred, 1), ty, reduction="batchmean")
        value.backward()  # type: ignore[no-untyped-call]
        return value.detach()

    return loss


def _as_float64(result: Any) -> Any:
    if hasattr(result, "detach"):
        result = result.detach().numpy()
    return np.asarray(result, dtype=np.float64)


def run(w: Workload, repeat: int, after: Callable[[], None] | None = None) -> Result:
    """Time every side of ``w``, ``repeat`` samples each, interleaved.

    Parameters
    ----------
    w : Workload
        What to time.
    repeat : int
        Samples per side.
    after : callable, optional
        Called once when the workload is done, for a progress bar.

    Returns
    -------
    Result
        The median time of each side, and a warning for each side whose result is not
        kldiv's within :data:`_AGREEMENT`.
    """
    sides = _sides(w, np.random.default_rng(1000))
    names = list(sides)
    reference = _as_float64(sides["kldiv"]())
    notes = []
    for name in names[1:]:
        got = _as_float64(sides[name]())
        scale = np.maximum(np.abs(reference), np.finfo(np.float32).tiny)
        difference = float(np.max(np.abs(got - reference) / scale))
        if not difference <= _AGREEMENT:
            notes.append(f"{w.name}: {name} differs from kldiv by {difference:.2e} (relative)")
    samples: dict[str, list[float]] = {name: [] for name in names}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeat):
            for i in range(len(names)):
                name = names[(r + i) % len(names)]
                start = time.perf_counter()
                sides[name]()
                samples[name].append(time.perf_counter() - start)
    finally:
        if enabled:
            gc.enable()
    if after is not None:
        after()
    return Result(w, {name: statistics.median(s) for name, s in samples.items()}, notes)


def side_names(results: list[Result]) -> list[str]:
    """Every side of ``results``, in the order they first appear."""
    return list(dict.fromkeys(name for result in results for name in result.times))


def pyplot() -> ModuleType | None:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display), or None where
    matplotlib is not installed (the ``plot`` extra)."""
    try:
        importlib.import_module("matplotlib").use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return None


def draw(plt: Any, results: list[Result], path: str) -> None:
    """A bar chart of each side's ratio to naive NumPy, per workload, saved to ``path`` in
    the format its suffix names."""
    sides = [s for s in side_names(results) if s != BASELINE]
    figure, axes = plt.subplots(figsize=(7, 4), layout="constrained")
    try:
        width = 0.8 / max(len(sides), 1)
        for i, side in enumerate(sides):
            ratios = [result.ratio(side) or 0.0 for result in results]
            positions = [j + (i - (len(sides) - 1) / 2) * width for j in range(len(results))]
            axes.bar(positions, ratios, width, label=side)
        axes.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="naive NumPy")
        axes.set_xticks(range(len(results)), [r.workload.name for r in results])
        axes.set_ylabel("time / naive NumPy (below 1 is faster)")
        shape = results[0].workload.shape if results else ()
        axes.set_title(f"kldiv bench, {shape} float32, median of each side")
        axes.legend()
        figure.savefig(path, format=os.path.splitext(path)[1][1:].lower())
    finally:
        plt.close(figure)
