"""PyTorch tensors on the NumPy and CuPy fast paths, with an analytic backward.

A CPU tensor is handed to :mod:`kldiv._backends.numpy` as a NumPy view of its memory (no
copy), a CUDA tensor to :mod:`kldiv._backends.cupy` through DLPack when CuPy is installed;
the result comes back as a tensor the same way. Where a tensor requires grad, the call is a
:class:`torch.autograd.Function` whose backward is the divergence's derivative, written in
torch operations (so that it has a derivative itself, for double backward), with the finite
values of docs/index.md ("Gradients") where the true derivative is infinite.

Everything else is declined (``NotImplemented``), for the generic code to run: tensors whose
values cannot be read (``torch.compile``, ``vmap``, meta and fake tensors), a dtype the fast
paths lack (bfloat16), other devices, and CUDA without CuPy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from kldiv import _agnostic, _compat
from kldiv import _validation as v
from kldiv._backends import forwarding
from kldiv._backends import numpy as _numpy_path
from kldiv._table import DIVERGENCES
from kldiv._typing import Array

# the dtypes both fast paths take (NumPy has no bfloat16)
_DTYPES = frozenset({torch.float16, torch.float32, torch.float64})
_has_cupy: bool | None = None


def _route(arrays: Sequence[Array]) -> str | None:
    """``"cpu"`` or ``"cuda"``, the fast path that takes these tensors, or None."""
    global _has_cupy
    kind = arrays[0].device.type
    if any(x.device.type != kind for x in arrays):
        return None  # the public layer has refused two devices; a 0-d CPU tensor is not one
    if not all(_compat.values_are_readable(x) for x in arrays):
        return None
    if not all(x.dtype in _DTYPES for x in arrays):
        return None
    if kind == "cpu":
        return "cpu"
    if kind == "cuda":
        if _has_cupy is None:
            _has_cupy = importlib.util.find_spec("cupy") is not None
        return "cuda" if _has_cupy else None
    return None


def _forward(route: str, name: str, arrays: Sequence[Array], options: dict[str, Any]) -> Array:
    """``name`` of the ``route``'s fast path on the tensors' memory, as a tensor."""
    if route == "cpu":
        views = [x.detach().numpy() for x in arrays]
        out = getattr(_numpy_path, name)(*views, xp=_numpy_path._generic_np(), **options)
        return torch.from_numpy(np.asarray(out))
    import cupy
    from torch.utils.dlpack import from_dlpack

    from kldiv._backends import cupy as _cupy_path

    # The CuPy path checks nothing itself: what the NumPy path fuses is checked here first.
    if options["validate"]:
        _check(name, arrays, options)
    with cupy.cuda.Device(arrays[0].device.index):
        views = [cupy.from_dlpack(x.detach()) for x in arrays]
        out = getattr(_cupy_path, name)(*views, xp=_compat.array_namespace(views[0]), **options)
        return from_dlpack(out)


def _check(name: str, arrays: Sequence[Array], options: dict[str, Any]) -> None:
    row = DIVERGENCES[name]
    xp = _compat.array_namespace(*arrays)
    shape = v.broadcast_shape(row.inputs, [tuple(x.shape) for x in arrays])
    checks = row.checks & _FUSED[name]
    v.check_values(row.inputs, checks, arrays, shape, options.get("axes", ()), xp)


def _bridged(name: str, arrays: Sequence[Array], options: dict[str, Any]) -> Array:
    route = _route(arrays)
    if route is None:
        return NotImplemented
    if torch.is_grad_enabled() and any(x.requires_grad for x in arrays):
        return _Differentiable.apply(name, route, options, *arrays)  # type: ignore[no-untyped-call]
    return _forward(route, name, arrays, options)


class _Differentiable(torch.autograd.Function):
    """A fast path's forward, and the backward of :data:`_BACKWARD`."""

    @staticmethod
    def forward(ctx: Any, name: str, route: str, options: dict[str, Any], *arrays: Array) -> Array:
        out = _forward(route, name, arrays, options)
        ctx.name, ctx.options = name, options
        ctx.save_for_backward(out, *arrays)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Array) -> tuple[Array | None, ...]:
        out, *arrays = ctx.saved_tensors
        options = ctx.options
        if "axes" in options:
            grad = _unreduced(grad, options["axes"], options["keepdims"])
        shape = torch.broadcast_shapes(*(x.shape for x in arrays))  # type: ignore[no-untyped-call]
        needs = ctx.needs_input_grad[3:]
        # a backward that is itself differentiated runs under grad mode (create_graph=True)
        ops = _Ops(safe=torch.is_grad_enabled())
        expanded = [x.expand(shape) for x in arrays]
        grads = _BACKWARD[ctx.name](grad, out, *expanded, needs=needs, ops=ops, **options)
        return (
            None,
            None,
            None,
            *(None if g is None else _sum_to(g, x) for g, x in zip(grads, arrays, strict=True)),
        )


def _unreduced(grad: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    """``grad`` of a reduction over ``axes`` with those axes back as size 1."""
    if not keepdims:
        for axis in sorted(axes):
            grad = grad.unsqueeze(axis)
    return grad


def _sum_to(g: Array, x: Array) -> Array:
    """``g`` of a broadcast of ``x``, summed back to ``x``'s shape, in ``x``'s dtype."""
    lead = g.ndim - x.ndim
    if lead:
        g = g.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, size in enumerate(x.shape) if size == 1 and g.shape[i] != 1)
    if dims:
        g = g.sum(dim=dims, keepdim=True)
    return g.to(x.dtype)


def _where(mask: Array, value: Array) -> Array:
    return torch.where(mask, value, torch.zeros((), dtype=value.dtype, device=value.device))


class _Ops:
    """The logarithm and ratio the derivatives are made of.

    A first derivative takes the plain ``log`` and ``/``: whatever they give where a term is
    masked (``log(0) = -inf``, ``0/0``) is replaced by the final ``where``, and each costs one
    pass. A backward that is itself differentiated (``create_graph=True``) takes them with
    the masked entries replaced first, so that no infinite derivative sits in a branch a
    ``where`` drops (a zero cotangent times it would be NaN).
    """

    def __init__(self, safe: bool) -> None:
        self.safe = safe

    def log(self, x: Array) -> Array:
        if not self.safe:
            return torch.log(x)
        return _where(x > 0, torch.log(torch.where(x > 0, x, torch.ones_like(x))))

    def ratio(self, p: Array, q: Array) -> Array:
        if not self.safe:
            return p / q
        return _where((p > 0) & (q > 0), p / torch.where(q > 0, q, torch.ones_like(q)))


# Each term's derivatives, times the cotangent ``grad`` (broadcast to the inputs), for the
# inputs in ``needs``: the documented finite values where a derivative alone is infinite
# (p == 0), and 0 where the term itself is infinite (q == 0 < p; docs/index.md leaves the
# gradient of an infinite value to the library, and the generic code's is no better).
Needs = Sequence[bool]


def _kl_div_backward(
    grad: Array, out: Array, p: Array, q: Array, *, needs: Needs, ops: _Ops, **options: Any
) -> list[Array | None]:
    if DIVERGENCES["kl_div"].clips(options["validate"]) and bool((out == 0).any()):
        # A result clipped to 0 is a constant, with no gradient, as the generic code's where
        # gives; an exact 0 (p == q) is not. Which is which, only the unclipped sum says.
        axes, keepdims = options["axes"], options["keepdims"]
        xp = _compat.array_namespace(p)
        raw = _agnostic.kl_div(p, q, axes=axes, keepdims=keepdims, validate=False, xp=xp)
        grad = _where(_unreduced(raw, axes, keepdims) >= 0, grad)
    return _rel_entr_backward(grad, out, p, q, needs=needs, ops=ops)


def _rel_entr_backward(
    grad: Array, out: Array, p: Array, q: Array, *, needs: Needs, ops: _Ops, **options: Any
) -> list[Array | None]:
    live = (p > 0) & (q > 0)
    dp = _where(live, grad * (1 + (ops.log(p) - ops.log(q)))) if needs[0] else None
    dq = _where(live, -grad * ops.ratio(p, q)) if needs[1] else None
    return [dp, dq]


def _entropy_backward(
    grad: Array, out: Array, p: Array, *, needs: Needs, ops: _Ops, **options: Any
) -> list[Array | None]:
    return [_where(p > 0, -grad * (1 + ops.log(p)))]


def _cross_entropy_backward(
    grad: Array, out: Array, p: Array, q: Array, *, needs: Needs, ops: _Ops, **options: Any
) -> list[Array | None]:
    positive = q > 0
    dp = _where(positive, -grad * ops.log(q)) if needs[0] else None
    dq = _where(positive & (p > 0), -grad * ops.ratio(p, q)) if needs[1] else None
    return [dp, dq]


def _js_div_backward(
    grad: Array, out: Array, p: Array, q: Array, *, needs: Needs, ops: _Ops, **options: Any
) -> list[Array | None]:
    """``dJS/dp = log(p/m)/2``, 0 at ``p == 0``; the same for ``q``."""
    log_m = ops.log(p / 2 + q / 2)
    dp = _where(p > 0, grad * (ops.log(p) - log_m) / 2) if needs[0] else None
    dq = _where(q > 0, grad * (ops.log(q) - log_m) / 2) if needs[1] else None
    return [dp, dq]


def _hellinger_backward(
    grad: Array, out: Array, p: Array, q: Array, *, needs: Needs, ops: _Ops, **options: Any
) -> list[Array | None]:
    """``d/dp sum((sqrt(p) - sqrt(q))**2)/2 = (1 - sqrt(q/p))/2``: 0 where ``p == 0`` (its
    true value, ``-inf`` for ``q > 0``, as docs/index.md lists); the same for ``q``."""
    root_p, root_q = torch.sqrt(p), torch.sqrt(q)
    dp = _where(p > 0, grad * (1 - ops.ratio(root_q, root_p)) / 2) if needs[0] else None
    dq = _where(q > 0, grad * (1 - ops.ratio(root_p, root_q)) / 2) if needs[1] else None
    return [dp, dq]


def _total_variation_backward(
    grad: Array, out: Array, p: Array, q: Array, *, needs: Needs, ops: _Ops, **options: Any
) -> list[Array | None]:
    """``sign(p - q)/2`` and its negation: 0 where ``p == q``, as ``abs`` gives."""
    half = torch.sign(p - q) * grad / 2
    return [half if needs[0] else None, -half if needs[1] else None]


def _kl_div_logits_backward(
    grad: Array, out: Array, a: Array, b: Array, *, needs: Needs, ops: _Ops, **options: Any
) -> list[Array | None]:
    """``dKL/da = p*(d - KL)`` and ``dKL/db = q - p``, ``d = log p - log q``."""
    axes = options["axes"]
    la, lb = _log_softmax(a.to(out.dtype), axes), _log_softmax(b.to(out.dtype), axes)
    p = torch.exp(la)
    kl = _unreduced(out, axes, options["keepdims"])
    # an infinite KL (q == 0 < p somewhere in the row) has no gradient to give: 0, as the
    # generic code gives, rather than the NaN of inf - inf
    finite = torch.isfinite(kl)
    da = None
    if needs[0]:
        live = (p > 0) & finite
        d = la - torch.where(live, lb, torch.zeros_like(lb))
        safe_kl = torch.where(finite, kl, torch.zeros_like(kl))
        da = _where(live, grad * p * (torch.where(live, d, torch.zeros_like(d)) - safe_kl))
    db = _where(finite, grad * (torch.exp(lb) - p)) if needs[1] else None
    return [da, db]


def _log_softmax(x: Array, axes: tuple[int, ...]) -> Array:
    if len(axes) == 1:
        return torch.log_softmax(x, dim=axes[0])
    return x - torch.logsumexp(x, dim=axes, keepdim=True)


_BACKWARD: dict[str, Callable[..., list[Array | None]]] = {
    "rel_entr": _rel_entr_backward,
    "kl_div": _kl_div_backward,
    "kl_div_logits": _kl_div_logits_backward,
    "entropy": _entropy_backward,
    "cross_entropy": _cross_entropy_backward,
    "js_div": _js_div_backward,
    "hellinger": _hellinger_backward,
    "total_variation": _total_variation_backward,
}

# What the CPU route fuses, as the NumPy path does; the CUDA route checks the same itself.
_FUSED = {name: getattr(_numpy_path, name).__kldiv_fuses__ for name in _BACKWARD}


rel_entr = forwarding("rel_entr", _FUSED["rel_entr"], _bridged)
kl_div = forwarding("kl_div", _FUSED["kl_div"], _bridged)
kl_div_logits = forwarding("kl_div_logits", _FUSED["kl_div_logits"], _bridged)
entropy = forwarding("entropy", _FUSED["entropy"], _bridged)
cross_entropy = forwarding("cross_entropy", _FUSED["cross_entropy"], _bridged)
js_div = forwarding("js_div", _FUSED["js_div"], _bridged)
hellinger = forwarding("hellinger", _FUSED["hellinger"], _bridged)
total_variation = forwarding("total_variation", _FUSED["total_variation"], _bridged)
