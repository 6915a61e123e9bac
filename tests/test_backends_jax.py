"""The JAX bridge, kldiv._backends.jax: concrete CPU arrays through NumPy's fast path.

Values on every dtype against the NumPy reference, results on the input's device, the fused
checks' errors, and the tracers (``jit``, ``grad``, ``vmap``) that it leaves to the generic
code.
"""

from __future__ import annotations

import numpy as np
import pytest

import kldiv
from kldiv import _dispatch
from kldiv._table import DIVERGENCES
from tests._helpers import numpy_path_calls
from tests._references import call, inputs, reference

jax = pytest.importorskip("jax")
jnp = jax.numpy
bridge = pytest.importorskip("kldiv._backends.jax")

BRIDGED = tuple(name for name in DIVERGENCES if hasattr(bridge, name))


def test_the_bridge_takes_every_function_of_the_numpy_path():
    from kldiv._backends import numpy as numpy_path

    assert set(BRIDGED) == {name for name in DIVERGENCES if hasattr(numpy_path, name)}
    import array_api_compat

    xp = array_api_compat.array_namespace(jnp.zeros(1))
    for name in BRIDGED:
        assert _dispatch.implementation(name, xp).func is getattr(bridge, name)


@pytest.mark.parametrize("name", BRIDGED)
def test_concrete_arrays_reach_the_numpy_path(name, monkeypatch):
    calls = numpy_path_calls(monkeypatch, name)
    p, q = (jnp.asarray(x, dtype=jnp.float32) for x in inputs(name, (70, 40)))
    with kldiv.options(parallel_min=0):
        call(name, p, q)
    assert calls == [np.ndarray]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("name", BRIDGED)
def test_values_on_every_dtype(name, dtype):
    p, q = (jnp.asarray(x, dtype=dtype) for x in inputs(name, (32, 17)))
    out = call(name, p, q)
    assert isinstance(out, jax.Array)
    assert out.dtype == p.dtype
    assert out.device == p.device
    expected = reference(name, np.asarray(p, np.float64), np.asarray(q, np.float64))
    rtol = {"float16": 2e-3, "bfloat16": 2e-2, "float32": 2e-6}[dtype]
    np.testing.assert_allclose(np.asarray(out, np.float64), expected, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in BRIDGED if not DIVERGENCES[n].logits])
def test_bad_values_are_named(name):
    p, q = inputs(name, (4, 5))
    bad = [p.copy(), q.copy()]
    bad[len(DIVERGENCES[name].inputs) - 1][1, 2] = -0.1
    arg = DIVERGENCES[name].inputs[-1]
    with pytest.raises(ValueError, match=rf"^{arg} "):
        call(name, *(jnp.asarray(x, dtype=jnp.float32) for x in bad))


@pytest.mark.parametrize("name", BRIDGED)
def test_jit_grad_and_vmap_run_the_generic_code(name):
    p, q = (jnp.asarray(x, dtype=jnp.float32) for x in inputs(name, (6, 9)))
    eager = np.asarray(call(name, p, q))
    np.testing.assert_allclose(
        np.asarray(jax.jit(lambda a, b: call(name, a, b))(p, q)), eager, rtol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(jax.vmap(lambda a, b: call(name, a, b))(p, q)), eager, rtol=1e-5
    )
    grad = jax.grad(lambda a: call(name, a, q, validate=False).sum())(p)
    assert grad.shape == p.shape
    assert bool(jnp.isfinite(grad).all())
