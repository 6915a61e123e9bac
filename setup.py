"""Build of the optional compiled kernels, ``kldiv._backends.numpy._native``; metadata in setup.cfg.

Without a C compiler, or with a compiler that refuses these flags (MSVC), the build goes on
without the module, and kldiv's NumPy path runs in pure NumPy.
"""

import hashlib
import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
SOURCES = [
    "kldiv/_backends/numpy/_native.c",
    "kldiv/_backends/numpy/_native_variant.h",
    "kldiv/_backends/numpy/_native_row.h",
    "kldiv/_backends/numpy/_native_logits.h",
]


def source_digest() -> str:
    """The sources' SHA-256, compiled in, so that a test can tell a stale build."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((HERE / name).read_bytes())
    return digest.hexdigest()


flags = [] if sys.platform == "win32" else ["-O3", "-fopenmp-simd", "-fno-trapping-math"]

setup(
    ext_modules=[
        Extension(
            "kldiv._backends.numpy._native",
            sources=["kldiv/_backends/numpy/_native.c"],
            depends=SOURCES[1:],
            define_macros=[("KLDIV_SOURCE_SHA256", f'"{source_digest()}"')],
            extra_compile_args=flags,
            optional=True,
        )
    ]
)
