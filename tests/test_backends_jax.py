"""The JAX bridge, kldiv._backends.jax: concrete CPU arrays through NumPy's fast path.

Values on every dtype against the NumPy reference, results on the input's device, the fused
checks' errors, the tracers (``jit``, ``grad``, ``vmap``) that it leaves to the generic
code, and checked ``kl_div`` of tracers, which takes passes written for XLA to fuse.
"""

from __future__ import annotations

import numpy as np
import pytest

import kldiv
from kldiv import _dispatch
from kldiv._table import DIVERGENCES
from tests._helpers import full_path_only, numpy_path_calls, random_distributions
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
    with kldiv.options(parallel_min=0), full_path_only():  # the bridge, not the short path
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
def test_jit_grad_and_vmap_agree_with_eager(name):
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


# kl_div under jit: the fused passes of kldiv._backends.jax._traced_kl_div


def _jitted(p, q, **options):
    return np.asarray(jax.jit(lambda a, b: kldiv.kl_div(a, b, **options))(p, q), np.float64)


def _scipy_kl(p, q, axis=-1):
    """The float64 reference, by SciPy, of the arrays' own (rounded) values."""
    from scipy.special import rel_entr

    return rel_entr(np.asarray(p, np.float64), np.asarray(q, np.float64)).sum(axis=axis)


def test_checked_kl_div_of_tracers_takes_the_fused_passes(monkeypatch):
    calls = []
    original = bridge._traced_kl_div
    monkeypatch.setattr(
        bridge, "_traced_kl_div", lambda *args: calls.append(args) or original(*args)
    )
    p, q = (jnp.asarray(x, dtype=jnp.float32) for x in inputs("kl_div", (6, 9)))
    _jitted(p, q)
    assert len(calls) == 1
    _jitted(p, q, validate=False)  # unchecked measures: the generic code, exact for any mass
    assert len(calls) == 1


@pytest.mark.parametrize("delta", [0.5, 1e-1, 1e-2, 1e-3, 1e-4])
def test_jitted_kl_div_is_exact_to_roundings_of_its_terms(delta):
    """Near-identical pairs included: the error is a few roundings of sum(|p*log(p/q)|).
    A KL below 0 (rows normalised to float32's rounding, no closer) is returned as 0."""
    rng = np.random.default_rng(7)
    p = random_distributions(rng, (64, 500))
    q = p * (1 + delta * rng.uniform(-1, 1, p.shape))
    p, q = (np.asarray(x / x.sum(-1, keepdims=True), np.float32) for x in (p, q))
    expected = np.maximum(_scipy_kl(p, q), 0)
    from scipy.special import rel_entr

    scale = np.abs(rel_entr(p.astype(np.float64), q.astype(np.float64))).sum(-1)
    got = _jitted(jnp.asarray(p), jnp.asarray(q))
    assert np.all(np.abs(got - expected) <= 8 * np.finfo(np.float32).eps * scale)


def test_jitted_kl_div_keeps_ratios_below_eps():
    """p/q < eps, where 1 + (p - q)/q loses p: each such term is off by at most eps*q/2,
    a rounding of the KL that the rest of the row makes."""
    rng = np.random.default_rng(3)
    p = random_distributions(rng, (32, 200))
    p[:, :50] *= 1e-12
    p /= p.sum(-1, keepdims=True)
    q = random_distributions(rng, (32, 200))
    p, q = p.astype(np.float32), q.astype(np.float32)
    np.testing.assert_allclose(_jitted(jnp.asarray(p), jnp.asarray(q)), _scipy_kl(p, q), rtol=4e-6)


def test_jitted_kl_div_conventions():
    """Zeros in p, in both at once, and alone in q (each row's value by the definition)."""
    p = np.array(
        [
            [0.5, 0.5, 0.0, 0.0],  # zeros of p: no contribution
            [0.5, 0.5, 0.0, 0.0],  # zeros of both at once: redone by the generic code
            [1.0, 0.0, 0.0, 0.0],  # a point mass
            [0.25, 0.25, 0.25, 0.25],  # p > 0 == q: inf
            [-0.0, 0.5, 0.5, 0.0],  # a negative zero is a zero
        ],
        np.float32,
    )
    q = np.array(
        [
            [0.25, 0.25, 0.25, 0.25],
            [0.5, 0.25, 0.25, 0.0],
            [0.5, 0.5, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.25, 0.25, 0.25, 0.25],
        ],
        np.float32,
    )
    got = _jitted(jnp.asarray(p), jnp.asarray(q))
    np.testing.assert_allclose(got, _scipy_kl(p, q), rtol=1e-6)
    assert got[3] == np.inf


@pytest.mark.parametrize(
    ("where", "value"),
    [("p", -1e-12), ("p", -0.5), ("q", -1e-12), ("q", np.nan), ("p", np.inf), ("q", 2.0)],
)
def test_jitted_kl_div_refuses_as_nan(where, value):
    """Each bad entry makes its row NaN, a tiny negative included, and a negative q where
    p is 0 (whose term the arithmetic would make 0); the other rows keep their values."""
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], np.float32)
    q = np.array([[0.25, 0.25, 0.5], [0.3, 0.3, 0.4]], np.float32)
    (p if where == "p" else q)[0, 2] = value
    got = _jitted(jnp.asarray(p), jnp.asarray(q))
    assert np.isnan(got[0])
    np.testing.assert_allclose(got[1], _scipy_kl(p[1], q[1]), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_jitted_kl_div_axes_broadcasting_and_dtypes(dtype):
    rng = np.random.default_rng(5)
    p = random_distributions(rng, (3, 7, 5), axis=1)
    q = random_distributions(rng, (7, 1), axis=0)
    p, q = jnp.asarray(p, dtype=dtype), jnp.asarray(q, dtype=dtype)
    out = jax.jit(lambda a, b: kldiv.kl_div(a, b, axis=1, keepdims=True))(p, q)
    assert out.dtype == p.dtype
    assert out.shape == (3, 1, 5)
    expected = _scipy_kl(np.asarray(p, np.float64), np.asarray(q, np.float64), axis=1)
    rtol = {"float16": 3e-3, "bfloat16": 2e-2, "float32": 1e-5}[dtype]
    np.testing.assert_allclose(np.asarray(out, np.float64)[:, 0], expected, rtol=rtol)


def test_jitted_kl_div_derivatives_are_the_generic_codes():
    """Under grad the value is the fused passes' and the derivative the generic code's,
    zero in a row refused as NaN."""
    from kldiv import _agnostic, _compat

    p, q = (jnp.asarray(x, dtype=jnp.float32) for x in inputs("kl_div", (4, 6)))
    p = p.at[0, 1].set(0.0).at[0, 2].add(float(p[0, 1]))  # a zero of p, still normalised
    q = q.at[3, 0].add(1.0)  # a row off 1: NaN, with a zero derivative
    xp = _compat.array_namespace(p)

    def generic(a, b):
        return _agnostic.kl_div(a, b, axes=(1,), keepdims=False, validate=True, xp=xp)

    weights = jnp.arange(1.0, 5.0)
    for arg in (0, 1):
        got = jax.jit(jax.grad(lambda a, b: kldiv.kl_div(a, b) @ weights, argnums=arg))(p, q)
        want = np.array(jax.grad(lambda a, b: generic(a, b) @ weights, argnums=arg)(p, q))
        want[3] = 0.0
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    expected = _scipy_kl(p, q) * [1, 1, 1, np.nan]
    np.testing.assert_allclose(np.asarray(jax.vmap(kldiv.kl_div)(p, q)), expected, rtol=1e-5)


_SHARDED = """
import numpy as np, jax, kldiv
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
mesh = Mesh(np.array(jax.devices()[:2]), ("x",))
rng = np.random.default_rng(0)
p, q = (rng.uniform(0.1, 1, (8, 16)).astype(np.float32) for _ in range(2))
p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
expected = kldiv.kl_div(p, q)
for spec in (P("x"), P()):
    sp, sq = (jax.device_put(x, NamedSharding(mesh, spec)) for x in (p, q))
    np.testing.assert_allclose(np.asarray(kldiv.kl_div(sp, sq)), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(kldiv.entropy(sp)), kldiv.entropy(p), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(kldiv.kl_div_logits(sp, sq)), kldiv.kl_div_logits(p, q), rtol=1e-5
    )
"""


def test_arrays_sharded_over_several_cpu_devices():
    # their .device is a sharding, not a device: the short path and the bridge leave them to
    # the generic code, which JAX runs sharded. In a process of its own: the devices are set
    # before JAX starts
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run([sys.executable, "-c", _SHARDED], env=env, timeout=300, check=False)
    assert done.returncode == 0
