"""The CUDA C sources of the CuPy backend and the options every build of them takes.

The same files are compiled three ways: by ``cupy.RawModule`` (NVRTC) on a GPU, by NVRTC alone
in the compile test, and by g++ against ``tests/cuda_sim`` in the tests that run them on the
CPU. All three take :func:`defines`, so that the block-size limit the launcher plans with is
the one in the kernels' ``__launch_bounds__``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
DIVERGENCES = KERNEL_DIR / "divergences.cu"
LOSS = KERNEL_DIR / "loss.cu"
SOURCES = (DIVERGENCES, LOSS)

# The largest block the launcher makes, and every kernel's __launch_bounds__: at most 128
# registers a thread, so that no kernel needs to spill (see docs/cuda.md for the counts).
MAX_BLOCK_THREADS = 512
# Bytes of one reduction state of a split row in the launcher's scratch buffer (the kernels
# check that each state fits: kernels/rows.cuh).
SLOT_BYTES = 64


def defines() -> tuple[str, ...]:
    """``NAME=VALUE`` macros, as for ``-D``."""
    return (f"KLDIV_MAX_BLOCK_THREADS={MAX_BLOCK_THREADS}", f"KLDIV_SLOT_BYTES={SLOT_BYTES}")


def headers_digest() -> str:
    """A digest of every kernel source and header in :data:`KERNEL_DIR`.

    CuPy keys its on-disk cache of compiled modules by the source and the options, not by the
    headers the source includes, so the digest goes into the options: an edited header then
    gives a new build rather than a stale one.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in KERNEL_DIR.iterdir() if p.suffix in (".cu", ".cuh")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def nvrtc_options() -> tuple[str, ...]:
    """Options for NVRTC on top of those CuPy adds itself (C++ standard, -ftz, include paths)."""
    return (
        f"-I{KERNEL_DIR}",
        *(f"-D{d}" for d in defines()),
        f"-DKLDIV_KERNELS_DIGEST={headers_digest()}",
    )
