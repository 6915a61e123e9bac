"""Accuracy of ``kldiv.kl_div`` and of the usual alternatives against a 50-digit reference.

Run ``python benchmarks/accuracy.py [--quick] [--out DIR]``.

Method
------
A corpus of cases, each in float32 and in float64, is built from a fixed seed. Every row is
normalised in its own dtype (``w / w.sum()``), so that ``kldiv``'s default validation, which
the ``kldiv`` side keeps on, accepts it:

* ``random``: Dirichlet(1) rows (exponential weights), n = 1000.
* ``peaked``: ``p`` puts ~0.99 on one entry; ``q`` peaks at the same entry with 0.5 to 0.99.
* ``heavy``: heavy-tailed weights, lognormal (sigma 3) and Pareto (alpha 1) rows in turn.
* ``zeros``: 30 % of ``p``'s entries are exactly 0; ``q`` is positive.
* ``near_<KL>``: ``q = p * (1 + eps * N(0, 1))``, renormalised, with ``eps = sqrt(2 KL)`` so
  that the divergence is about ``KL``, for KL from 1e-9 to 1e-4. ``near_3e-09`` in float32 is
  the issue's example ("float32 naive NumPy is off by 9% at KL = 3e-9 on 1000-element rows").
  Then a few of ``q``'s entries are nudged by an ulp or so until ``q`` sums exactly to what
  ``p`` sums to: float32 normalisation leaves sums off 1 by up to ~1e-7, and a mass
  difference larger than the divergence makes ``sum(p * log(p / q))`` of the floats
  meaningless, even negative (see ``match_mass``).
* ``large``: two rows of 1e6 entries (1e4 with ``--quick``), exponential and lognormal.

The reference for a row is ``sum(p * log(p / q))`` in mpmath at 50 significant digits, on the
exact values of the floats under test (``mpmath.mpf(float(x))`` is exact for float32 and
float64 alike); ``p == 0`` contributes 0. Identical ``(p, q)`` pairs are grouped and their
term multiplied by the (exact, integer) count, which changes nothing for the random rows of
1000 and is what makes the 1e6 rows affordable: they take their pairs from a pool of 1e5
distinct pairs, each used ten times at shuffled positions, so the reference needs 1e5
logarithms instead of 1e6, while every side still sums 1e6 terms.

Sides: ``kldiv.kl_div(p, q)`` (defaults; the compiled kernels where built); ``kldiv_numpy``,
the same with the compiled kernels switched off (kldiv's pure NumPy path); naive NumPy
``np.sum(p * np.log(p / q), -1)`` in the input dtype, and the same after casting the inputs to
float64; ``scipy.special.rel_entr(p, q).sum(-1)``; ``scipy.stats.entropy(p, q, axis=-1)``
(which renormalises its arguments);
PyTorch ``F.kl_div(q.log(), p, reduction="none").sum(-1)``.

Reading the output
------------------
One line per case and dtype: the rows' size and count, the range of the reference KL, the
largest ``|sum(p) - sum(q)|`` of a row (by about this much ``sum(p * log(p / q))`` of the
floats can differ from a true divergence; every side is judged against the floats' own
value all the same), and per side the largest relative error
``|computed - reference| / |reference|`` over the case's rows (``nan``: a side returned NaN,
as naive NumPy does for ``0 * log(0)``; 1 or more: the sign or the magnitude is wrong).
``kldiv < 0`` says whether kldiv returned a negative divergence.

Then the issue's targets with PASS or MISS: the relative-error limits apply to every row
whose reference is at least 1e-4, pooled per dtype; "naive / kldiv error" divides the case
maxima of naive NumPy (same dtype) and kldiv for each ``near_*`` case and shows the worst.
Last the machine (``kldiv_path`` says which kldiv was measured: whichever ``import kldiv``
finds). The same is written to ``DIR/accuracy.md``, with per-row errors and references in
``DIR/accuracy.json``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import mpmath
import numpy as np
import scipy.special
import scipy.stats
import torch
import torch.nn.functional as F
from _common import (
    Target,
    machine,
    machine_lines,
    markdown_table,
    numpy_only,
    targets_table,
    write_outputs,
)

import kldiv

SEED = 20240612
DPS = 50
N = 1000
NEAR_KL = (1e-9, 3e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4)
DTYPES = (np.float32, np.float64)
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
# Relative-error targets, for rows whose reference KL is at least KL_FLOOR.
KL_FLOOR = 1e-4
REL_LIMITS = {"float32": 1e-6, "float64": 1e-13}
NEAR_GAIN = 100.0

Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    p: np.ndarray  # (rows, n), normalised in its dtype
    q: np.ndarray

    @property
    def dtype(self) -> str:
        return self.p.dtype.name

    @property
    def key(self) -> str:
        return f"{self.name}/{self.dtype}"


# --- corpus ---------------------------------------------------------------------------------


def normalise(w: np.ndarray, dtype: Any) -> np.ndarray:
    """Rows of ``w`` cast to ``dtype`` and divided by their sum in ``dtype``, C-contiguous.

    Contiguous, because NumPy sums a strided axis one element after another, which in float32
    leaves 1e6-element rows off 1 by ~1e-3, and because that is the layout users pass.
    """
    w = np.ascontiguousarray(w, dtype=dtype)
    return w / w.sum(axis=-1, keepdims=True)


def random_rows(rng: np.random.Generator, rows: int, dtype: Any) -> Pair:
    p = rng.standard_exponential((rows, N))
    q = rng.standard_exponential((rows, N))
    return normalise(p, dtype), normalise(q, dtype)


def _peaked_weights(rng: np.random.Generator, at: np.ndarray, lo: float, hi: float) -> np.ndarray:
    # Uniform weights, then one entry per row raised so that it holds `mass` of the row.
    w = rng.uniform(0.01, 1.0, (len(at), N))
    rows = np.arange(len(at))
    w[rows, at] = 0.0
    mass = rng.uniform(lo, hi, len(at))
    w[rows, at] = w.sum(axis=-1) * mass / (1 - mass)
    return w


def peaked_rows(rng: np.random.Generator, rows: int, dtype: Any) -> Pair:
    at = rng.integers(N, size=rows)
    p = _peaked_weights(rng, at, 0.985, 0.995)
    q = _peaked_weights(rng, at, 0.5, 0.99)
    return normalise(p, dtype), normalise(q, dtype)


def _heavy_weights(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    # Lognormal weights span ~10 orders of magnitude; Pareto(1) rows are led by a few giants.
    w = rng.lognormal(0.0, 3.0, (rows, n))
    w[1::2] = rng.pareto(1.0, (rows // 2, n)) + 1.0
    return w


def heavy_rows(rng: np.random.Generator, rows: int, dtype: Any) -> Pair:
    p = _heavy_weights(rng, rows, N)
    q = _heavy_weights(rng, rows, N)
    return normalise(p, dtype), normalise(q, dtype)


def zero_rows(rng: np.random.Generator, rows: int, dtype: Any) -> Pair:
    w = rng.standard_exponential((rows, N))
    w[rng.random((rows, N)) < 0.3] = 0.0
    return normalise(w, dtype), normalise(rng.standard_exponential((rows, N)), dtype)


def near_rows(rng: np.random.Generator, rows: int, dtype: Any, kl: float) -> Pair:
    """``q`` a relative perturbation of ``p`` by ``eps``: KL about ``eps**2 / 2``."""
    p = normalise(rng.standard_exponential((rows, N)), dtype)
    eps = math.sqrt(2 * kl)
    # The perturbation is applied to p's float values in float64, then rounded once.
    q = normalise(p.astype(np.float64) * (1 + eps * rng.standard_normal((rows, N))), dtype)
    for p_row, q_row in zip(p, q, strict=True):
        match_mass(q_row, p_row)
    return p, q


def match_mass(q: np.ndarray, p: np.ndarray) -> None:
    """Nudge entries of the row ``q``, in place, until it sums exactly to what ``p`` sums to.

    Normalising in float32 leaves each row's sum off 1 by up to ~1e-7, and when ``sum(p)``
    and ``sum(q)`` differ by more than the divergence, ``sum(p * log(p / q))`` of the floats
    is no divergence at all: it can be negative. Each step moves the largest entries not yet
    moved by the exact remaining difference (a Fraction), rounded to the dtype, so what is
    left shrinks below half an ulp of ever smaller entries, usually to exactly 0.
    """
    remaining = _exact_sum(p) - _exact_sum(q)
    for k in np.argsort(q)[::-1]:
        if remaining == 0:
            break
        old = q[k]
        q[k] = q.dtype.type(float(old) + float(remaining))
        remaining -= Fraction(float(q[k])) - Fraction(float(old))


def _exact_sum(x: np.ndarray) -> Fraction:
    return sum(map(Fraction, x.tolist()), Fraction(0))


def large_rows(rng: np.random.Generator, n: int, dtype: Any) -> Pair:
    """Two rows of ``n``, exponential and lognormal, from a pool of at most 1e5 pairs."""
    pool = min(n, 100_000)
    weights = np.stack(
        [
            rng.standard_exponential((2, pool)),  # row 0: (p, q)
            rng.lognormal(0.0, 2.0, (2, pool)),  # row 1: (p, q)
        ]
    )
    # Each pooled pair n / pool times, at shuffled positions. Equal weights normalise to equal
    # floats, so the reference sees at most `pool` distinct pairs per row.
    index = rng.permutation(n) % pool
    p = normalise(weights[:, 0, index], dtype)
    q = normalise(weights[:, 1, index], dtype)
    return p, q


def corpus(quick: bool) -> list[Case]:
    rows = 3 if quick else 16
    n_large = 10_000 if quick else 1_000_000
    builders: list[tuple[str, str, Callable[[np.random.Generator, Any], Pair]]] = [
        ("random", "Dirichlet(1) rows", lambda g, dt: random_rows(g, rows, dt)),
        ("peaked", "p ~0.99 on one entry", lambda g, dt: peaked_rows(g, rows, dt)),
        ("heavy", "lognormal(3) / Pareto(1) rows", lambda g, dt: heavy_rows(g, rows, dt)),
        ("zeros", "30% of p exactly 0", lambda g, dt: zero_rows(g, rows, dt)),
    ]
    for kl in NEAR_KL:
        builders.append(
            (
                f"near_{kl:.0e}",
                f"q = p(1 + eps N), KL ~ {kl:.0e}",
                lambda g, dt, kl=kl: near_rows(g, rows, dt, kl),
            )
        )
    builders.append(("large", f"2 rows of {n_large:.0e}", lambda g, dt: large_rows(g, n_large, dt)))
    cases = []
    for i, (name, description, build) in enumerate(builders):
        for j, dtype in enumerate(DTYPES):
            p, q = build(np.random.default_rng([SEED, i, j]), dtype)
            cases.append(Case(name, description, p, q))
    return cases


# --- reference ------------------------------------------------------------------------------


def reference(p: np.ndarray, q: np.ndarray) -> mpmath.mpf:
    """``sum(p * log(p / q))`` of one row, at ``DPS`` digits, on the exact float values."""
    pairs, counts = np.unique(np.stack([p, q], axis=-1), axis=0, return_counts=True)
    with mpmath.workdps(DPS):
        terms = []
        for (pi, qi), count in zip(pairs.tolist(), counts.tolist(), strict=True):
            if pi == 0.0:
                continue
            x = mpmath.mpf(pi)
            terms.append(count * x * mpmath.log(x / mpmath.mpf(qi)))
        return mpmath.fsum(terms)


def rel_error(value: float, ref: mpmath.mpf) -> float:
    """``|value - ref| / |ref|`` (NaN for NaN, inf for an infinite value or a zero ``ref``)."""
    if not math.isfinite(value):
        return value if math.isnan(value) else math.inf
    with mpmath.workdps(DPS):
        diff = abs(mpmath.mpf(value) - ref)
        if ref == 0:
            return 0.0 if diff == 0 else math.inf
        return float(diff / abs(ref))


# --- sides ----------------------------------------------------------------------------------


def naive(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    # 0 * log(0) is NaN here; that is the naive formula's answer, not a warning to show.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(p * np.log(p / q), axis=-1)


def torch_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    tp, tq = torch.from_numpy(p), torch.from_numpy(q)
    return F.kl_div(tq.log(), tp, reduction="none").sum(-1).numpy()


SIDES: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {
    "kldiv": lambda p, q: kldiv.kl_div(p, q),
    "kldiv_numpy": numpy_only(lambda p, q: kldiv.kl_div(p, q)),
    "numpy_naive": naive,
    "numpy_naive_f64": lambda p, q: naive(p.astype(np.float64), q.astype(np.float64)),
    "scipy_rel_entr": lambda p, q: scipy.special.rel_entr(p, q).sum(-1),
    "scipy_entropy": lambda p, q: scipy.stats.entropy(p, q, axis=-1),
    "torch": torch_kl,
}


def _max(errors: Sequence[float]) -> float:
    """Largest error, NaN if any is NaN (``max`` would depend on where the NaN sits)."""
    return math.nan if any(math.isnan(e) for e in errors) else max(errors)


def measure(case: Case) -> dict[str, Any]:
    """Reference and per-row relative errors of every side on one case."""
    refs = [reference(p, q) for p, q in zip(case.p, case.q, strict=True)]
    values = {name: np.asarray(fn(case.p, case.q), np.float64) for name, fn in SIDES.items()}
    errors = {
        name: [rel_error(float(v), ref) for v, ref in zip(vals, refs, strict=True)]
        for name, vals in values.items()
    }
    return {
        "case": case.name,
        "dtype": case.dtype,
        "description": case.description,
        "rows": case.p.shape[0],
        "n": case.p.shape[1],
        "kl_reference": [float(r) for r in refs],
        "max_mass_difference": max(
            abs(math.fsum(p.tolist()) - math.fsum(q.tolist()))
            for p, q in zip(case.p, case.q, strict=True)
        ),
        "rel_error": errors,
        "max_rel_error": {name: _max(errs) for name, errs in errors.items()},
        "kldiv_negative": bool(np.any(values["kldiv"] < 0)),
    }


# --- targets and report ---------------------------------------------------------------------


def _near_gain(result: dict[str, Any]) -> float:
    kl_err = result["max_rel_error"]["kldiv"]
    naive_err = result["max_rel_error"]["numpy_naive"]
    return math.inf if kl_err == 0 else naive_err / kl_err


def targets(results: dict[str, dict[str, Any]]) -> list[Target]:
    negatives = sum(r["kldiv_negative"] for r in results.values())
    out = [Target("kldiv: cases with a negative result", negatives, "<=", 0)]
    for dtype, limit in REL_LIMITS.items():
        errs = [
            err
            for r in results.values()
            if r["dtype"] == dtype
            for err, kl in zip(r["rel_error"]["kldiv"], r["kl_reference"], strict=True)
            if kl >= KL_FLOOR
        ]
        out.append(Target(f"{dtype}: kldiv max rel error, KL >= 1e-4", _max(errs), "<=", limit))
    near = [r for r in results.values() if r["case"].startswith("near_")]
    for dtype in REL_LIMITS:
        gains = {r["case"]: _near_gain(r) for r in near if r["dtype"] == dtype}
        worst = min(gains, key=gains.__getitem__)
        desc = f"{dtype}: near-identical, naive / kldiv error (worst: {worst})"
        out.append(Target(desc, gains[worst], ">=", NEAR_GAIN))
    return out


def _fmt(err: float) -> str:
    return f"{err:.1e}" if math.isfinite(err) else str(err)


def results_table(results: dict[str, dict[str, Any]]) -> str:
    header = ["case", "dtype", "n", "rows", "reference KL", "|sum p - sum q|", *SIDES, "kldiv < 0"]
    rows = []
    for r in results.values():
        kl = f"{min(r['kl_reference']):.1e} .. {max(r['kl_reference']):.1e}"
        mass = f"{r['max_mass_difference']:.0e}"
        errs = [_fmt(r["max_rel_error"][name]) for name in SIDES]
        negative = "yes" if r["kldiv_negative"] else "no"
        size = [str(r["n"]), str(r["rows"])]
        rows.append([r["case"], r["dtype"], *size, kl, mass, *errs, negative])
    return markdown_table(header, rows)


def issue_example(results: dict[str, dict[str, Any]]) -> str:
    r = results["near_3e-09/float32"]
    naive_errs = r["rel_error"]["numpy_naive"]
    return (
        f"The issue's example, float32 rows of {r['n']} at KL ~ 3e-9: naive NumPy's relative"
        f" error is {_fmt(float(np.median(naive_errs)))} in the median row and"
        f" {_fmt(_max(naive_errs))} at most over {r['rows']} rows (the issue cites 9%);"
        f" kldiv's is {_fmt(r['max_rel_error']['kldiv'])} at most."
    )


def report(data: dict[str, Any], goals: list[Target]) -> str:
    results = data["cases"]
    parts = [
        "# kldiv accuracy",
        "",
        f"Max relative error per case against a {DPS}-digit mpmath reference on the exact"
        " float inputs" + (" (--quick: fewer, smaller rows)." if data["config"]["quick"] else "."),
        "",
        results_table(results),
        "",
        issue_example(results),
        "",
        "## Targets",
        "",
        targets_table(goals, ".2g"),
        "",
        "## Machine",
        "",
        *machine_lines(data["machine"]),
        "",
        f"Elapsed: {data['elapsed_s']:.1f} s",
    ]
    return "\n".join(parts) + "\n"


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rows per case, 1e4 large rows")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    info = machine()
    info["mpmath"] = mpmath.__version__
    data: dict[str, Any] = {
        "config": {"quick": args.quick, "seed": SEED, "dps": DPS},
        "machine": info,
        "cases": {},
    }
    for case in corpus(args.quick):
        print(f"measuring {case.key} {case.p.shape} ...", flush=True)
        data["cases"][case.key] = measure(case)
    goals = targets(data["cases"])
    data["targets"] = [t.as_dict() for t in goals]
    data["elapsed_s"] = time.perf_counter() - started
    text = report(data, goals)
    print(text, end="")
    write_outputs(args.out, "accuracy", data, text)
    return data


if __name__ == "__main__":
    main()
