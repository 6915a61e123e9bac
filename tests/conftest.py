"""The ``xp`` fixture: every test that takes it runs once per installed array library."""

from __future__ import annotations

import importlib

import pytest

# (fixture id, module to import, why it might be skipped)
_BACKENDS = (
    ("numpy", "array_api_compat.numpy"),
    ("array_api_strict", "array_api_strict"),
    ("torch", "array_api_compat.torch"),
    ("dask", "array_api_compat.dask.array"),
    ("jax", "jax.numpy"),
    ("cupy", "array_api_compat.cupy"),
)


def _gpu_present() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no CuPy, no driver, or no device: all mean no GPU to test on
        return False


def _params():
    for name, module in _BACKENDS:
        marks = [pytest.mark.gpu] if name == "cupy" else []
        yield pytest.param((name, module), id=name, marks=marks)


@pytest.fixture(params=_params(), scope="session")
def xp(request):
    """The array namespace of one backend (array_api_compat's wrapper where there is one)."""
    name, module = request.param
    if name == "cupy" and not _gpu_present():
        pytest.skip("CuPy needs a CUDA GPU, and none is present")
    pytest.importorskip(module.split(".")[0] if name != "dask" else "dask.array")
    return importlib.import_module(module)
