"""``python -m kldiv``: KL divergences of the bundled example or of two ``.npy`` files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from kldiv._funcs import kl_div

# The worked example of the TensorFlow Q&A thread kldiv started from (shared/seeds): per
# row, KL(p || q) = [0.88995184, 1.08808468], as np.sum(p * np.log(p / q), axis=1) gives.
EXAMPLE_P = ((0.25, 0.1, 0.65), (0.8, 0.15, 0.05))
EXAMPLE_Q = ((0.7, 0.2, 0.1), (0.15, 0.8, 0.05))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kldiv",
        description=(
            "Print KL(p || q) along the last axis. With no files, for the bundled example "
            f"p = {[list(r) for r in EXAMPLE_P]}, q = {[list(r) for r in EXAMPLE_Q]}."
        ),
    )
    parser.add_argument("p", nargs="?", help="a .npy file of probabilities")
    parser.add_argument("q", nargs="?", help="a .npy file of probabilities, broadcast against p")
    parser.add_argument("--axis", type=int, default=-1, help="the distribution axis (default -1)")
    parser.add_argument("--base", type=float, default=None, help="log base (default e: nats)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.p is None) != (args.q is None):
        parser.error("give two .npy files, p and q, or none for the bundled example")
    if args.p is None:
        p, q = np.array(EXAMPLE_P), np.array(EXAMPLE_Q)
    else:
        try:
            p, q = np.load(args.p, allow_pickle=False), np.load(args.q, allow_pickle=False)
        except (OSError, ValueError) as exc:
            print(f"kldiv: cannot read input: {exc}", file=sys.stderr)
            return 2
    try:
        result = kl_div(p, q, axis=args.axis, base=args.base)
    except (TypeError, ValueError, IndexError) as exc:
        print(f"kldiv: {exc}", file=sys.stderr)
        return 2
    print(np.array2string(np.asarray(result), separator=", ", precision=8))
    return 0
