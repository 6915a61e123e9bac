"""Which dtype a result has, and which dtype the arithmetic behind it runs in."""

from __future__ import annotations

from typing import Any

from kldiv._typing import Namespace


def compute_dtype(xp: Namespace, dtype: Any, device: Any) -> Any:
    """float64 wherever the array's device has it, else float32.

    The terms of a divergence and their sum are formed in double precision, so that a
    float32 or float16 input gets a result correct to its own precision (the near-identical
    distributions that cancel in float32 included). A device without float64 (JAX without
    ``jax_enable_x64``, Apple's MPS) computes in float32 and loses that margin.
    """
    info = xp.__array_namespace_info__()
    if "float64" in info.dtypes(device=device, kind="real floating"):
        return xp.float64
    return xp.float32
