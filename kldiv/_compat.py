"""The one module that imports ``array_api_compat``.

Everything else in kldiv asks this module which library an array belongs to, so a change of
the compat layer (or a workaround for one library) is made here once. ``array_api_compat``
looks only in ``sys.modules`` to recognise arrays, so none of these calls imports CuPy, torch,
JAX or Dask.

PyTorch tensors take a short path of their own through the functions here, because they are
what ``torch.compile`` traces, and dynamo (torch 2.13) traces two things badly:

- ``functools.lru_cache``, which ``array_api_compat`` wraps its type tests in: dynamo steps
  around the cache with a ``UserWarning`` for each (an error under ``-W error``);
- ``sys.modules``: dynamo copies the whole dict into its state, and fails with "dictionary
  changed size during iteration" when a module is imported meanwhile.

So a tensor is recognised by its class alone (:func:`is_torch_array`), and torch, once known to
be loaded, is reached with an ``import`` statement, which dynamo runs as such.
"""

from __future__ import annotations

import sys
from typing import Any

import array_api_compat as _aac
from array_api_compat import is_jax_array, is_lazy_array

__all__ = [
    "array_namespace",
    "device",
    "is_array_api_obj",
    "is_cupy_namespace",
    "is_dask_namespace",
    "is_jax_namespace",
    "is_numpy_namespace",
    "is_torch_array",
    "is_torch_namespace",
    "values_are_readable",
]

# The names array_api_compat gives torch's namespaces: the bare library and its wrapper.
_TORCH_NAMESPACES = frozenset({"torch", "array_api_compat.torch"})


def is_torch_array(x: object) -> bool:
    """``array_api_compat.is_torch_array`` without its cache or ``sys.modules`` (see the
    module docstring): whether ``torch.Tensor`` is among the classes of ``x``.

    Two or three classes to look at for a tensor (``Tensor``, ``TensorBase``, ``object``) or
    an ndarray: a few tenths of a microsecond.
    """
    return any(cls.__name__ == "Tensor" and cls.__module__ == "torch" for cls in type(x).__mro__)


def is_array_api_obj(x: object) -> bool:
    """Whether ``x`` is an array of a library ``array_api_compat`` knows."""
    return is_torch_array(x) or bool(_aac.is_array_api_obj(x))


def array_namespace(*xs: Any) -> Any:
    """The (``array_api_compat``-wrapped) namespace of the arrays ``xs``.

    ``TypeError`` for arrays of two libraries, as ``array_api_compat.array_namespace``.
    """
    if xs and all(is_torch_array(x) for x in xs):
        # torch is imported (xs holds its tensors), so this imports no optional library.
        import array_api_compat.torch as torch_namespace

        return torch_namespace
    return _aac.array_namespace(*xs)


def device(x: Any) -> Any:
    """The device ``x`` lies on (``"cpu"`` for NumPy, None for an unplaced JAX tracer)."""
    if is_torch_array(x):
        return x.device
    return _aac.device(x)


# The dispatch table asks these of every namespace: torch's is answered by name, as
# array_api_compat does, without its cached tests (see the module docstring).


def is_torch_namespace(xp: Any) -> bool:
    return getattr(xp, "__name__", None) in _TORCH_NAMESPACES


def is_numpy_namespace(xp: Any) -> bool:
    return not is_torch_namespace(xp) and bool(_aac.is_numpy_namespace(xp))


def is_cupy_namespace(xp: Any) -> bool:
    return not is_torch_namespace(xp) and bool(_aac.is_cupy_namespace(xp))


def is_dask_namespace(xp: Any) -> bool:
    return not is_torch_namespace(xp) and bool(_aac.is_dask_namespace(xp))


def is_jax_namespace(xp: Any) -> bool:
    return not is_torch_namespace(xp) and bool(_aac.is_jax_namespace(xp))


def values_are_readable(x: Any) -> bool:
    """Whether ``bool(x)``/``float(x)`` on values of ``x`` is cheap and allowed.

    ``is_lazy_array`` answers True for every JAX array, since it cannot tell a concrete
    array from one under ``jax.jit`` tracing without importing JAX. A concrete JAX array
    can be read, so only a tracer counts as lazy here; Dask always does. ``is_lazy_array``
    answers False for every torch tensor, even one with no values to read (meta, fake, under
    a transform or a tracer); :func:`_torch_values_are_readable` tells those apart.
    """
    if is_torch_array(x):
        return _torch_values_are_readable(x)
    if is_jax_array(x):
        core = sys.modules.get("jax.core")
        tracer = getattr(core, "Tracer", None)
        return tracer is None or not isinstance(x, tracer)
    return not is_lazy_array(x)


def _torch_values_are_readable(x: Any) -> bool:
    """False for a torch tensor whose values a Python ``bool`` cannot, or must not, read.

    - ``torch.compile`` (dynamo) and ``torch.export``: ``is_compiling()`` is True while they
      trace, and a ``bool`` of a tensor there breaks the graph. Asked first, because dynamo
      folds it to a constant and then traces none of the rest.
    - functorch transforms (``vmap``, ``grad``, ``jacrev``, ``functionalize``, ...): under
      ``vmap`` a ``bool`` is data-dependent control flow, which raises. Whether any transform
      is active is asked, not whether ``x`` is wrapped, since ``x`` may be a tensor closed
      over from outside, or wrapped at a level below the outer one (``grad`` of ``vmap``).
      This is what torch itself asks before ``backward()``.
    - ``torch.jit.trace``: a ``bool`` warns and bakes one branch into the trace.
    - meta tensors have no values, and fake tensors (``FakeTensor``) report a real device
      while holding none; outside ``torch.compile`` a fake tensor also turns up in
      ``FakeTensorMode``, ``make_fx`` (the proxy mode) and ``FunctionalTensorMode``.

    The common case, a plain tensor in eager mode, costs a few attribute reads and C calls
    (about a microsecond).
    """
    # x is a tensor, so torch is loaded and this imports nothing (see the module docstring).
    import torch

    if torch.compiler.is_compiling() or x.is_meta:
        return False
    c = torch._C
    if c._are_functorch_transforms_active() or c._is_tracing():
        return False
    if type(x) is not torch.Tensor:
        # A subclass (a Parameter, too): fake and functional tensors stand for values they
        # do not hold. torch imports both modules itself; reached in eager mode only.
        from torch._subclasses.fake_tensor import FakeTensor
        from torch._subclasses.functional_tensor import FunctionalTensor

        if isinstance(x, (FakeTensor, FunctionalTensor)):
            return False
    modes = c._TorchDispatchModeKey
    return (
        c._get_dispatch_mode(modes.FAKE) is None
        and c._get_dispatch_mode(modes.PROXY) is None
        and c._get_dispatch_mode(modes.FUNCTIONAL) is None
    )
