"""Moving test data in and out of every backend, and checking what comes back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import array_api_compat
import numpy as np
import pytest


def dtype_of(xp: Any, name: str) -> Any:
    """``xp``'s dtype called ``name``; skips the test where the backend lacks it.

    Asked of an array rather than of the namespace: float16 is outside the standard, so
    namespaces need not list it, and JAX without x64 turns float64 into float32.
    """
    try:
        dtype = xp.asarray(np.zeros(1, dtype=name)).dtype
    except TypeError:
        pytest.skip(f"{xp.__name__} has no {name}")
    if name not in str(dtype):
        pytest.skip(f"{xp.__name__} has no {name} on its default device (it gives {dtype})")
    return dtype


def asarray(xp: Any, x: Any, dtype: str) -> Any:
    """``x`` (anything NumPy takes) as an array of ``xp`` of ``dtype``."""
    dtype_of(xp, dtype)
    return xp.asarray(np.asarray(x, dtype=dtype))


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of any backend's array (computing a lazy one)."""
    if array_api_compat.is_dask_array(x):
        x = x.compute()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_numpy_array(x):
        return np.asarray(x)
    return np.from_dlpack(x)


def assert_result(result: Any, like: Any, *, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Check that ``result`` has ``like``'s namespace and device, and ``dtype`` and ``shape``.

    Returns the result as NumPy for comparing values.
    """
    expected_xp = array_api_compat.array_namespace(like)
    assert array_api_compat.array_namespace(result) is expected_xp, type(result)
    assert result.dtype == dtype, (result.dtype, dtype)
    assert array_api_compat.device(result) == array_api_compat.device(like)
    assert tuple(result.shape) == shape, (tuple(result.shape), shape)
    return to_numpy(result)


def random_distributions(
    rng: np.random.Generator, shape: tuple[int, ...], axis: int | tuple[int, ...] = -1
) -> np.ndarray:
    """Strictly positive float64 distributions along ``axis``."""
    x = rng.uniform(0.01, 1.0, size=shape)
    return x / x.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """The textbook log-softmax along the last axis, in ``x``'s dtype: the host reference."""
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def numpy_path_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[type]:
    """The types of the first argument of every call of the NumPy fast path's ``name`` from
    now on, for the test to see that a bridge reached it, and with what."""
    from kldiv._backends import numpy as numpy_path

    calls: list[type] = []
    original = getattr(numpy_path, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(type(args[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(numpy_path, name, counted)
    return calls


@contextlib.contextmanager
def full_path_only() -> Iterator[None]:
    """The public functions with the short path (``kldiv._backends.numpy._short``) declining
    every call: the full path's namespace, dispatch, checks and row views, for a test to
    compare the short path against or to reach a backend's bridge."""
    from kldiv._backends.numpy import _short

    with (
        mock.patch.object(_short, "reduction", return_value=None),
        mock.patch.object(_short, "logits", return_value=None),
    ):
        yield
