"""Concrete JAX arrays on the CPU through NumPy's fast path, by DLPack.

Eager JAX dispatches each operation of the generic code on its own, tens of them per call;
a concrete array on the CPU instead goes to :mod:`kldiv._backends.numpy` as a NumPy view of
its buffer (``np.from_dlpack``, no copy), and the result comes back on the input's device.
Under ``jax.jit``, ``grad``, ``vmap`` and every other transformation the arrays are tracers.
``kl_div`` of tracers, checked, takes :func:`_traced_kl_div`, written for XLA to fuse; every
other function of tracers, other devices and dtypes NumPy lacks (bfloat16) are declined
(``NotImplemented``), and the generic code runs, which XLA compiles.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kldiv import _agnostic, _compat
from kldiv import _validation as v
from kldiv._backends import forwarding
from kldiv._backends import numpy as _numpy_path
from kldiv._backends.numpy import _short
from kldiv._dtypes import compute_dtype
from kldiv._typing import Array

_DTYPES = frozenset({np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)})


def _on_numpy(arrays: Sequence[Array]) -> list[Array] | None:
    """NumPy views of the arrays' buffers, or None where the NumPy path cannot take them."""
    if not all(_compat.values_are_readable(x) for x in arrays):
        return None
    devices = {x.device for x in arrays}  # a sharding, not a device, for a sharded array
    if len(devices) != 1 or getattr(next(iter(devices)), "platform", None) != "cpu":
        return None
    if not all(np.dtype(x.dtype) in _DTYPES for x in arrays):
        return None
    return [np.from_dlpack(x) for x in arrays]


def _by_numpy(name: str, arrays: Sequence[Array], options: dict[str, Any]) -> Array:
    """``name`` of the arrays by the NumPy path, on their device (committed to it where they
    were, as JAX's own operations do); NotImplemented where it cannot take them."""
    views = _on_numpy(arrays)
    if views is None:
        return NotImplemented
    out = getattr(_numpy_path, name)(*views, xp=_numpy_path._generic_np(), **options)
    back = _short.to_jax(arrays[0].device, any(x.committed for x in arrays))
    return back(np.asarray(out))


def _fused(name: str) -> Any:
    return getattr(_numpy_path, name).__kldiv_fuses__


def _by_numpy_or_traced(name: str, arrays: Sequence[Array], options: dict[str, Any]) -> Array:
    """:func:`_by_numpy`, and for checked ``kl_div`` of tracers :func:`_traced_kl_div`."""
    if options["validate"] and not all(_compat.values_are_readable(x) for x in arrays):
        p, q = arrays
        return _traced_kl_div(p, q, options["axes"], options["keepdims"])
    return _by_numpy(name, arrays, options)


def _traced_kl_div(p: Array, q: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    """Checked ``kl_div`` of arrays that cannot be read, in three passes XLA fuses.

    The generic code's ``where``s keep XLA:CPU from fusing its terms into the reduction (each
    is written out to memory, and its dozen operations run apart): 13x the naive jitted
    ``sum(p*log(p/q))``. Here each pass is a chain of arithmetic ending in a sum, which XLA
    fuses into one loop:

    - ``sum(p*log1p(e*(p - q)/q))``, ``e = 1 - eps/2``. ``log1p`` of ``(p - q)/q`` keeps
      ``log(p/q)`` exact relative to its value near ``p == q``, where ``log`` of a rounded
      ratio is off by a rounding of 1. The factor ``e`` keeps ``1 + e*d >= eps/2``, so a
      ``p = 0`` term is ``0*log(eps/2) = 0``; it changes a term only where ``p/q < eps``, by
      at most ``(eps/2)*q``, which a distribution's KL (at least 0.15 times the mass of ``q``
      where ``p < q/2``) bounds to a rounding. ``q = 0 < p`` makes the sum ``inf``, ``p = q =
      0`` NaN.
    - ``sum(sqrt(p)**2)`` and the same of ``q``: the rows' masses to a rounding, NaN where an
      entry is negative, ``inf`` where one is infinite. A row off 1 (or NaN) is NaN, as the
      lazy checks make it.
    - Rows whose KL is not finite in a checked pair (a zero meeting a zero, a subnormal ``q``
      whose ratio overflowed, ``q = 0 < p``) are redone by the generic code, under
      ``lax.cond``, which runs it only when some row needs it (under ``vmap``, a ``cond``
      becomes a ``select``, and both run).

    The sum of terms of both signs is exact to a few roundings of ``sum(|p*log(p/q)|)``, not
    of the KL itself (the NumPy path and the generic code are): near-identical distributions
    apart by ``delta`` relative keep about ``-log10(eps/delta)`` digits. Derivatives are the
    generic code's (:func:`jax.custom_jvp`).
    """
    out_dtype = jnp.result_type(p, q)
    work = compute_dtype(jnp, out_dtype, _compat.device(p))
    ndim = max(p.ndim, q.ndim)
    p, q = (jnp.astype(jnp.reshape(x, (1,) * (ndim - x.ndim) + x.shape), work) for x in (p, q))
    n = int(np.prod([p.shape[a] for a in axes]))
    tolerance = v.sum_tolerance(out_dtype, n, jnp)
    kl = _fused_kl_div(p, q, axes, keepdims, tolerance)
    return jnp.astype(kl, out_dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _fused_kl_div(
    p: Array, q: Array, axes: tuple[int, ...], keepdims: bool, tolerance: float
) -> Array:
    """The three passes of :func:`_traced_kl_div` on ``p`` and ``q`` of one ndim and dtype."""
    dtype = np.dtype(p.dtype)  # float32 or float64, the compute dtype
    shrink = np.asarray(1 - np.finfo(dtype).eps / 2, dtype)
    kl = jnp.sum(p * jnp.log1p(((p - q) / q) * shrink), axis=axes, keepdims=keepdims)
    off = _off_one(p, axes, keepdims, tolerance) | _off_one(q, axes, keepdims, tolerance)
    redo = ~off & ~jnp.isfinite(kl)
    kl = jax.lax.cond(
        jnp.any(redo),
        lambda: jnp.where(redo, _generic_kl_div(p, q, axes, keepdims), kl),
        lambda: kl,
    )
    return jnp.where(off, jnp.nan, jnp.maximum(kl, 0))


def _off_one(x: Array, axes: tuple[int, ...], keepdims: bool, tolerance: float) -> Array:
    """Rows of ``x`` whose mass is off 1 by more than ``tolerance``, or which hold a
    negative, NaN or infinite entry (``sqrt`` makes a negative entry NaN)."""
    root = jnp.sqrt(x)
    mass = jnp.sum(root * root, axis=axes, keepdims=keepdims)
    return ~(jnp.abs(mass - 1) <= tolerance)


def _generic_kl_div(p: Array, q: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    return _agnostic.kl_div(
        p, q, axes=axes, keepdims=keepdims, validate=True, xp=_compat.array_namespace(p)
    )


@_fused_kl_div.defjvp
def _fused_kl_div_jvp(
    axes: tuple[int, ...],
    keepdims: bool,
    tolerance: float,
    primals: tuple[Array, Array],
    tangents: tuple[Array, Array],
) -> tuple[Array, Array]:
    """The value of :func:`_fused_kl_div`, with the generic code's derivative: zero in rows
    refused as NaN, as the lazy checks' ``where`` makes it."""
    p, q = primals
    out = _fused_kl_div(p, q, axes, keepdims, tolerance)
    _, tangent = jax.jvp(lambda a, b: _generic_kl_div(a, b, axes, keepdims), primals, tangents)
    off = _off_one(p, axes, keepdims, tolerance) | _off_one(q, axes, keepdims, tolerance)
    return out, jnp.where(off, jnp.zeros_like(tangent), tangent)


rel_entr = forwarding("rel_entr", _fused("rel_entr"), _by_numpy)
kl_div = forwarding("kl_div", _fused("kl_div"), _by_numpy_or_traced)
kl_div_logits = forwarding("kl_div_logits", _fused("kl_div_logits"), _by_numpy)
entropy = forwarding("entropy", _fused("entropy"), _by_numpy)
cross_entropy = forwarding("cross_entropy", _fused("cross_entropy"), _by_numpy)
js_div = forwarding("js_div", _fused("js_div"), _by_numpy)
hellinger = forwarding("hellinger", _fused("hellinger"), _by_numpy)
total_variation = forwarding("total_variation", _fused("total_variation"), _by_numpy)
