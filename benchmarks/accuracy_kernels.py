"""Accuracy of the compiled kernels besides KL's, against 50-digit mpmath: two tables of
``docs/accuracy.md``.

Run ``python benchmarks/accuracy_kernels.py [--rows N]`` from the repository root; it prints
the tables as Markdown.

* The other row kernels (``kl_rows(op=...)``: entropy, cross entropy, Jensen-Shannon, the
  squared Hellinger distance, total variation): for each, each dtype and four kinds of rows
  of ``tests/test_native.py`` (``random``, ``near``, ``far``, ``zeros in p``), the largest
  relative error over ``--rows`` rows of 200 on the best instruction-set variant the CPU
  runs, beside the naive formula in the same dtype (``nan`` where its ``0*log 0`` is).
* The float64 loss kernel (``loss_rows``) on the test's 24 rows of 257 (``loss_rows_case``):
  for each target form and gap, the smallest row error, then the largest relative error of
  kldiv's rows and of the naive float64 ``log_softmax`` form (``naive_softmax_kl_rows``).

The references are the tests' own (``op_reference``, ``mp_softmax_kl_rows``), so the
numbers are what the tests assert bounds on. Needs the compiled module built.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import mpmath
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# the repository root on the path first, for the tests' references
from tests import test_native as tn
from tests._references import naive_softmax_kl_rows

KINDS = ("random", "near", "far", "zeros in p")


def naive(op: str, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The textbook formula of ``op`` in the inputs' dtype, rows along axis 1."""
    with np.errstate(all="ignore"):
        if op == "entropy":
            return -np.sum(p * np.log(p), axis=1)
        if op == "cross_entropy":
            return -np.sum(p * np.log(q), axis=1)
        if op == "js":
            m = (p + q) / 2
            return (np.sum(p * np.log(p / m), axis=1) + np.sum(q * np.log(q / m), axis=1)) / 2
        if op == "hellinger":
            return np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, axis=1) / 2
        return np.sum(np.abs(p - q), axis=1) / 2


def relative(value: float, reference: mpmath.mpf) -> float:
    """|value - reference| relative to the reference (absolute where it is 0); nan for a
    value that is not finite."""
    if not np.isfinite(value):
        return float("nan")
    diff = abs(mpmath.mpf(float(value)) - reference)
    return float(diff / reference) if reference else float(diff)


def worst(errors: Sequence[float]) -> float:
    """The largest error, nan if any is."""
    return float("nan") if any(e != e for e in errors) else max(errors)


def kernel_rows(rows: int) -> list[str]:
    variant = tn.native.variants()[0]
    lines = [
        f"| kernel | dtype | case | kldiv ({variant}) | naive, same dtype |",
        "| --- | --- | --- | --- | --- |",
    ]
    for op in tn.OPS:
        for dtype in ("float32", "float64"):
            for kind in KINDS:
                rng = np.random.default_rng([tn.OPS.index(op), KINDS.index(kind), len(dtype)])
                p, q = tn.rows_of(rng, kind, rows, 200, dtype)
                q = p if op == "entropy" else q
                got, textbook = tn.run_op(op, p, q, variant), naive(op, p, q)
                references = [tn.op_reference(op, p[r], q[r]) for r in range(rows)]
                kl = worst([relative(got[r], ref) for r, ref in enumerate(references)])
                nv = worst([relative(textbook[r], ref) for r, ref in enumerate(references)])
                lines.append(f"| {op} | {dtype} | {kind} | {kl:.1e} | {nv:.1e} |")
    return lines


def loss_rows() -> list[str]:
    variant = tn.native.variants()[0]
    lines = [
        f"| target | entries apart | smallest error | kldiv ({variant}) "
        "| naive log_softmax, float64 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for norm_target in (False, True):
        for gap in (None, 1e-2, 1e-5):
            pred, target = tn.loss_rows_case(np.float64, norm_target, gap)
            want, _ = tn.loss_mp_reference(norm_target, gap)
            grad, errors = np.empty_like(pred), np.empty(len(pred))
            tn.native.loss_rows(
                pred, target, grad, errors, 1 / len(pred), norm_target, 1e-6, variant
            )
            textbook = naive_softmax_kl_rows(pred, target, norm_target)
            kl = np.max(np.abs(errors - want) / want)
            nv = np.max(np.abs(textbook - want) / want)
            apart = gap or (1.0 if norm_target else 0.9)
            form = "softmax" if norm_target else "distribution"
            lines.append(f"| {form} | {apart:g} | {want.min():.1e} | {kl:.1e} | {nv:.1e} |")
    return lines


def main(argv: Sequence[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8, help="rows per case (8)")
    args = parser.parse_args(argv)
    lines = [*kernel_rows(args.rows), "", *loss_rows()]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
