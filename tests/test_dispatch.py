"""The dispatch table sends each library where it says."""

from __future__ import annotations

import array_api_compat

from kldiv import _agnostic, _dispatch


def test_unknown_libraries_run_the_generic_code(xp):
    module = _dispatch.backend(xp)
    if array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp):
        assert module.__name__.startswith("kldiv.")
    else:
        assert module is _agnostic


def test_every_backend_has_every_function():
    names = {"rel_entr", "kl_div", "kl_div_logits", "entropy", "cross_entropy", "js_div"}
    for _, module_name in _dispatch._TABLE:
        module = __import__(module_name, fromlist=["_"])
        assert names <= set(dir(module)), module_name
