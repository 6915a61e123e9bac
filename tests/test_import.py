"""``import kldiv`` loads no optional array library, and says its version."""

from __future__ import annotations

import subprocess
import sys

import kldiv


def test_import_loads_no_optional_backend():
    code = (
        "import sys, kldiv, numpy as np\n"
        "assert not any(m.startswith('kldiv._backends') for m in sys.modules), 'a fast path'\n"
        "kldiv.kl_div(np.array([0.5, 0.5]), np.array([0.25, 0.75]))\n"
        "loaded = sorted(m for m in ('cupy', 'torch', 'jax', 'dask') if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


def test_version_comes_from_one_place():
    from importlib.metadata import version

    from kldiv._version import __version__

    assert kldiv.__version__ == __version__ == version("kldiv")
