"""Concrete JAX arrays on the CPU through NumPy's fast path, by DLPack.

Eager JAX dispatches each operation of the generic code on its own, tens of them per call;
a concrete array on the CPU instead goes to :mod:`kldiv._backends.numpy` as a NumPy view of
its buffer (``np.from_dlpack``, no copy), and the result comes back on the input's device.
Under ``jax.jit``, ``grad``, ``vmap`` and every other transformation the arrays are tracers:
those, other devices and dtypes NumPy lacks (bfloat16) are declined (``NotImplemented``),
and the generic code runs, which XLA compiles and fuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from kldiv import _compat
from kldiv._backends import forwarding
from kldiv._backends import numpy as _numpy_path
from kldiv._typing import Array

_DTYPES = frozenset({np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)})


def _on_numpy(arrays: Sequence[Array]) -> list[Array] | None:
    """NumPy views of the arrays' buffers, or None where the NumPy path cannot take them."""
    if not all(_compat.values_are_readable(x) for x in arrays):
        return None
    devices = {x.device for x in arrays}
    if len(devices) != 1 or next(iter(devices)).platform != "cpu":
        return None
    if not all(np.dtype(x.dtype) in _DTYPES for x in arrays):
        return None
    return [np.from_dlpack(x) for x in arrays]


def _by_numpy(name: str, arrays: Sequence[Array], options: dict[str, Any]) -> Array:
    """``name`` of the arrays by the NumPy path, on their device; NotImplemented where it
    cannot take them."""
    views = _on_numpy(arrays)
    if views is None:
        return NotImplemented
    out = getattr(_numpy_path, name)(*views, xp=_numpy_path._generic_np(), **options)
    return jax.device_put(np.asarray(out), arrays[0].device)


def _fused(name: str) -> Any:
    return getattr(_numpy_path, name).__kldiv_fuses__


rel_entr = forwarding("rel_entr", _fused("rel_entr"), _by_numpy)
kl_div = forwarding("kl_div", _fused("kl_div"), _by_numpy)
kl_div_logits = forwarding("kl_div_logits", _fused("kl_div_logits"), _by_numpy)
entropy = forwarding("entropy", _fused("entropy"), _by_numpy)
cross_entropy = forwarding("cross_entropy", _fused("cross_entropy"), _by_numpy)
js_div = forwarding("js_div", _fused("js_div"), _by_numpy)
