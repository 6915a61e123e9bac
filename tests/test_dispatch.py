"""The dispatch picks, per function and library, a fast path or the generic code."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest

import kldiv
from kldiv import _agnostic, _dispatch
from kldiv._table import DIVERGENCES


@pytest.mark.parametrize("name", [*DIVERGENCES, "softmax_kl_loss"])
def test_every_function_has_an_implementation_for_every_library(xp, name):
    impl = _dispatch.implementation(name, xp)
    assert callable(impl.func)
    # the loss's checks are its own (kldiv.loss): a float target's and pred's
    allowed = DIVERGENCES[name].checks if name in DIVERGENCES else kldiv.loss._FUSED
    assert impl.fused <= allowed


def test_libraries_without_a_fast_path_run_the_generic_code(xp):
    fast = ("numpy", "cupy", "torch", "dask", "jax")
    if any(getattr(array_api_compat, f"is_{lib}_namespace")(xp) for lib in fast):
        pytest.skip("a library with fast paths")
    for name in DIVERGENCES:
        assert _dispatch.implementation(name, xp).func is getattr(_agnostic, name)


def test_a_function_a_fast_path_lacks_falls_back_to_the_generic_code(monkeypatch):
    xp = array_api_compat.array_namespace(np.empty(0))
    from kldiv._backends import numpy as numpy_path

    monkeypatch.delattr(numpy_path, "hellinger")  # a fast path without it
    monkeypatch.setattr(_dispatch, "_cache", {})
    impl = _dispatch.implementation("hellinger", xp)
    assert impl.func is _agnostic.hellinger
    assert not impl.fused
    p, q = np.array([0.5, 0.5]), np.array([0.5, 0.5])
    assert kldiv.hellinger(p, q) == 0.0


def test_the_cache_answers_the_second_call():
    xp = array_api_compat.array_namespace(np.empty(0))
    assert _dispatch.implementation("kl_div", xp) is _dispatch.implementation("kl_div", xp)


def test_a_declined_call_runs_the_generic_code_with_every_check(monkeypatch):
    """A fast path that returns NotImplemented leaves the call to the generic code, and the
    checks it would have fused to the public layer."""
    xp = array_api_compat.array_namespace(np.empty(0))
    declined = _dispatch.Implementation(
        lambda *args, **kwargs: NotImplemented, DIVERGENCES["kl_div"].checks
    )
    monkeypatch.setitem(_dispatch._cache, ("kl_div", xp.__name__), declined)
    p, q = np.array([[0.25, 0.75], [0.5, 0.5]]), np.array([0.5, 0.5])
    np.testing.assert_allclose(kldiv.kl_div(p, q), np.sum(p * np.log(p / q), axis=-1))
    with pytest.raises(ValueError, match="not normalised"):
        kldiv.kl_div(np.array([0.5, 0.6]), np.array([0.5, 0.5]))


def test_run_falls_back_to_the_generic_code_when_a_call_is_declined(monkeypatch):
    xp = array_api_compat.array_namespace(np.empty(0))
    declined = _dispatch.Implementation(lambda *args, **kwargs: NotImplemented, frozenset())
    monkeypatch.setitem(_dispatch._cache, ("entropy", xp.__name__), declined)
    p = np.array([[0.5, 0.5], [0.25, 0.75]])
    got = _dispatch.run("entropy", xp, p, axes=(1,), keepdims=False, validate=True)
    np.testing.assert_allclose(got, -np.sum(p * np.log(p), axis=1))
