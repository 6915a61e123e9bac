"""Build of the optional compiled kernels, ``kldiv._backends.numpy._native``; metadata in setup.cfg.

Without a C compiler, or with a compiler that refuses these flags (MSVC), the build goes on
without the module, and kldiv's NumPy path runs in pure NumPy.
"""

import hashlib
import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
# The extension's C source and every header it includes: all of them are hashed into the build
NATIVE = "kldiv/_backends/numpy"
SOURCES = sorted(p.relative_to(HERE).as_posix() for p in (HERE / NATIVE).glob("_native*.[ch]"))


def source_digest() -> str:
    """The sources' SHA-256, compiled in, so that a test can tell a stale build."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((HERE / name).read_bytes())
    return digest.hexdigest()


# -fno-math-errno: sqrt vectorises (errno is never read); MSVC takes none of these
flags = (
    []
    if sys.platform == "win32"
    else ["-O3", "-fopenmp-simd", "-fno-trapping-math", "-fno-math-errno"]
)

setup(
    ext_modules=[
        Extension(
            "kldiv._backends.numpy._native",
            sources=[f"{NATIVE}/_native.c"],
            depends=[name for name in SOURCES if name.endswith(".h")],
            define_macros=[("KLDIV_SOURCE_SHA256", f'"{source_digest()}"')],
            extra_compile_args=flags,
            optional=True,
        )
    ]
)
