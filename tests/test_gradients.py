"""Gradients of every divergence under ``torch.autograd`` and ``jax.grad``.

On PyTorch and JAX arrays the functions run the generic array-API code, so autodiff goes
through its ``where`` masks and branch switches. The gradients are checked against the
formulas and the conventions at zeros of docs/index.md ("Gradients"), against central finite
differences, and with ``torch.autograd.gradcheck``; at zeros they must never be NaN (the
``where`` trap: a zero cotangent times the infinite derivative of a masked ``log(0)``).

The inputs are free variables: ``d/dp_j`` is the derivative with the other entries held, not
one along the simplex. Every gradient is that of the sum over the batch of rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import kldiv
from tests._helpers import log_softmax

# ---------------------------------------------------------------------------------------------
# The documented gradients, in float64 NumPy. NaN marks an entry nothing is documented for:
# it is checked only for not being NaN.


def _log0(x: np.ndarray) -> np.ndarray:
    """``log(x)`` where ``x > 0`` and 0 elsewhere (a placeholder every caller masks), without
    NumPy's divide-by-zero warning, which is an error under this suite's filterwarnings."""
    return np.log(np.where(x > 0, x, 1.0))


def _ratio0(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``p/q``, 0 where ``p == 0`` (whatever ``q``): the tests never put ``p > 0`` on ``q == 0``."""
    return np.divide(p, q, out=np.zeros_like(p), where=p > 0)


def _kl_expected(p: np.ndarray, q: np.ndarray) -> list[np.ndarray]:
    # d/dp_j = 1 + log(p_j/q_j), documented 0 at p_j = 0 (the true -inf); d/dq_j = -p_j/q_j
    dp = np.where(p > 0, 1 + _log0(p) - _log0(q), 0.0)
    return [dp, -_ratio0(p, q)]


def _entropy_expected(p: np.ndarray) -> list[np.ndarray]:
    # d/dp_j = -(1 + log p_j), documented 0 at p_j = 0 (the true +inf)
    return [np.where(p > 0, -(1 + _log0(p)), 0.0)]


def _cross_entropy_expected(p: np.ndarray, q: np.ndarray) -> list[np.ndarray]:
    # d/dp_j = -log q_j, the true value at p_j = 0 too; at p_j = q_j = 0 (+inf, or undefined)
    # nothing is documented, so it is only checked for not being NaN
    dp = np.where(q > 0, -_log0(q), np.nan)
    return [dp, -_ratio0(p, q)]


def _js_expected(p: np.ndarray, q: np.ndarray) -> list[np.ndarray]:
    # d/dp_j = log(p_j/m_j)/2 with m = (p + q)/2, documented 0 at p_j = 0; symmetric in q
    m = (p + q) / 2
    dp = np.where(p > 0, (_log0(p) - _log0(m)) / 2, 0.0)
    dq = np.where(q > 0, (_log0(q) - _log0(m)) / 2, 0.0)
    return [dp, dq]


def _logits_expected(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    # KL = sum p*(la - lb): dKL/da_k = p_k*((la_k - lb_k) - KL), dKL/db_k = q_k - p_k
    la, lb = log_softmax(a), log_softmax(b)
    p, q = np.exp(la), np.exp(lb)
    live = p > 0  # -inf - -inf would be NaN (and warn); those entries have p = 0 anyway
    d = np.where(live, la, 0.0) - np.where(live, lb, 0.0)
    kl = np.sum(p * d, axis=-1, keepdims=True)
    return [p * (d - kl), q - p]


@dataclass(frozen=True)
class Spec:
    """One public function: how to call it (values per row), and its documented gradient."""

    name: str
    call: Callable[..., Any]  # (validate, *inputs) -> one value per row
    expected: Callable[..., list[np.ndarray]]
    arity: int = 2
    logits: bool = False

    def inputs(self, p: np.ndarray, q: np.ndarray) -> list[np.ndarray]:
        """The arguments built from distributions ``p`` and ``q``: themselves, or logits
        (``log``, ``-inf`` at zeros, shifted per row so that they are not normalised)."""
        if self.logits:
            shift = np.arange(p.shape[0], dtype=np.float64)[:, None]
            with np.errstate(divide="ignore"):  # log(0) = -inf is the logit of a zero
                return [np.log(p) + shift, np.log(q) - 2 * shift]
        return [p, q][: self.arity]


SPECS = [
    Spec("kl_div", lambda v, p, q: kldiv.kl_div(p, q, validate=v), _kl_expected),
    Spec("rel_entr", lambda v, p, q: kldiv.rel_entr(p, q, validate=v).sum(-1), _kl_expected),
    Spec("entropy", lambda v, p: kldiv.entropy(p, validate=v), _entropy_expected, arity=1),
    Spec(
        "cross_entropy",
        lambda v, p, q: kldiv.cross_entropy(p, q, validate=v),
        _cross_entropy_expected,
    ),
    Spec("js_div", lambda v, p, q: kldiv.js_div(p, q, validate=v), _js_expected),
    Spec(
        "kl_div_logits",
        lambda v, a, b: kldiv.kl_div_logits(a, b, validate=v),
        _logits_expected,
        logits=True,
    ),
]
SPEC_PARAMS = [pytest.param(s, id=s.name) for s in SPECS]
VALIDATE = pytest.mark.parametrize("validate", [True, False], ids=["validate", "no-validate"])

# ---------------------------------------------------------------------------------------------
# Taking gradients


@dataclass(frozen=True)
class AD:
    """An autodiff library, the dtype the inputs are given in, and what it can be asked."""

    library: str  # "torch" or "jax"
    dtype: str
    x64: bool = True  # JAX: whether jax_enable_x64 is on while the gradient is taken
    rtol: float = 1e-10
    atol: float = 1e-12

    def grads(self, fn: Callable[..., Any], inputs: list[np.ndarray]) -> list[np.ndarray]:
        """The gradients of ``sum(fn(*inputs))`` with respect to each input, as float64."""
        cast = [np.asarray(x, dtype=self.dtype) for x in inputs]
        if self.library == "torch":
            return _torch_grads(fn, cast)
        return _jax_grads(fn, cast, self.x64)


# The start of the warning torch gives when a tensor that requires grad is read as a number.
_READ_WITH_GRAD = "Converting a tensor with requires_grad=True to a scalar"


def _torch_grads(fn: Callable[..., Any], inputs: list[np.ndarray]) -> list[np.ndarray]:
    torch = pytest.importorskip("torch")
    xs = [torch.tensor(x, requires_grad=True) for x in inputs]
    with warnings.catch_warnings():
        # torch warns once per process when validation reads a tensor that requires grad:
        # test_validating_a_tensor_that_requires_grad_does_not_warn pins that, and here it would
        # fail whichever test happens to run first
        warnings.filterwarnings("ignore", _READ_WITH_GRAD, UserWarning)
        out = fn(*xs)
    grads = torch.autograd.grad(out.sum(), xs)
    assert [g.dtype for g in grads] == [x.dtype for x in xs]
    return [g.numpy().astype(np.float64) for g in grads]


def _jax_grads(fn: Callable[..., Any], inputs: list[np.ndarray], x64: bool) -> list[np.ndarray]:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    # The context manager, not jax.config.update: the setting must not outlive this call,
    # since the other modules test JAX in its float32 default.
    with jax.enable_x64(x64):
        xs = [jnp.asarray(x) for x in inputs]
        objective = lambda *ys: jnp.sum(fn(*ys))  # noqa: E731
        grads = jax.grad(objective, argnums=tuple(range(len(xs))))(*xs)
        assert [g.dtype for g in grads] == [x.dtype for x in xs]
        return [np.asarray(g, dtype=np.float64) for g in grads]


AD_PARAMS = [
    pytest.param(AD("torch", "float64"), id="torch"),
    pytest.param(AD("jax", "float64"), id="jax-x64"),
    # without x64 JAX computes in float32 (docs/index.md), so its gradients are float32's
    pytest.param(AD("jax", "float32", x64=False, rtol=1e-4, atol=1e-5), id="jax-float32"),
]


def _assert_grads(got: list[np.ndarray], expected: list[np.ndarray], ad: AD) -> None:
    """No NaN anywhere in ``got``; equal to ``expected`` wherever that is not NaN."""
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert not np.isnan(g).any(), f"NaN in the gradient of argument {i}: {g}"
        checked = ~np.isnan(e)
        np.testing.assert_allclose(g[checked], e[checked], rtol=ad.rtol, atol=ad.atol)


def _check(
    spec: Spec, ad: AD, p: np.ndarray, q: np.ndarray, validate: bool, *, exact_zeros: bool = False
) -> None:
    """Autodiff of ``spec`` at ``(p, q)`` against its documented gradient.

    ``exact_zeros``: where that gradient is 0 it must be exactly 0, as the masks make it.
    """
    # the formulas are evaluated at the inputs as the library sees them: rounded to ad.dtype
    inputs = [np.asarray(x, dtype=ad.dtype) for x in spec.inputs(p, q)]
    got = ad.grads(lambda *xs: spec.call(validate, *xs), inputs)
    expected = spec.expected(*(x.astype(np.float64) for x in inputs))
    _assert_grads(got, expected, ad)
    if exact_zeros:
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_array_equal(g[e == 0], 0.0)


# ---------------------------------------------------------------------------------------------
# Test points


def _distributions(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Strictly positive float64 rows, no entry below ~0.05/n of its row."""
    x = rng.uniform(0.05, 1.0, size=shape)
    return x / x.sum(axis=-1, keepdims=True)


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / x.sum(axis=-1, keepdims=True)


def _with_zeros(*, shared: bool, in_q: bool, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Three rows with ``p_j = 0 < q_j`` at (0, 1), (1, 2) and the whole of column 3.

    ``shared`` also zeroes column 0 of both (``p_j = q_j = 0``); ``in_q`` puts
    ``q_j = 0 < p_j`` at (2, 4), a finite point for the symmetric ``js_div`` alone.
    """
    rng = np.random.default_rng(7)
    p, q = _distributions(rng, (3, n)), _distributions(rng, (3, n))
    p[0, 1] = p[1, 2] = 0.0
    p[:, 3] = 0.0
    if shared:
        p[:, 0] = q[:, 0] = 0.0
    if in_q:
        q[2, 4] = 0.0
    return _normalised(p), _normalised(q)


# ---------------------------------------------------------------------------------------------
# 1. Autodiff against the formulas


@VALIDATE
@pytest.mark.parametrize("n", [5, 20])
@pytest.mark.parametrize("spec", SPEC_PARAMS)
@pytest.mark.parametrize("ad", AD_PARAMS)
def test_gradient_matches_formula_at_positive_points(ad, spec, n, validate):
    rng = np.random.default_rng(n)
    _check(spec, ad, _distributions(rng, (3, n)), _distributions(rng, (3, n)), validate)


@VALIDATE
@pytest.mark.parametrize("spec", SPEC_PARAMS)
@pytest.mark.parametrize("ad", AD_PARAMS)
def test_gradient_follows_the_documented_convention_where_p_is_zero(ad, spec, validate):
    # p_j = 0 < q_j: 0 for d/dp_j (-log q_j for cross_entropy), the true value for d/dq_j
    p, q = _with_zeros(shared=False, in_q=spec.name == "js_div")
    _check(spec, ad, p, q, validate)


@VALIDATE
@pytest.mark.parametrize("spec", SPEC_PARAMS)
@pytest.mark.parametrize("ad", AD_PARAMS)
def test_documented_zero_gradients_are_exact_where_p_is_zero(ad, spec, validate):
    # "returns 0" is a value, not a tolerance: 0 times anything (a softmax's Jacobian, a mask
    # downstream) must stay 0
    p, q = _with_zeros(shared=False, in_q=spec.name == "js_div")
    _check(spec, ad, p, q, validate, exact_zeros=True)


@VALIDATE
@pytest.mark.parametrize("spec", SPEC_PARAMS)
@pytest.mark.parametrize("ad", AD_PARAMS)
def test_gradient_follows_the_documented_convention_where_p_and_q_are_zero(ad, spec, validate):
    # p_j = q_j = 0 is "p_j = 0": 0 for d/dp_j, and for d/dq_j, whose true value is 0
    p, q = _with_zeros(shared=True, in_q=False)
    _check(spec, ad, p, q, validate, exact_zeros=True)


# ---------------------------------------------------------------------------------------------
# kl_div's clip at 0 (validate=True) meets the gradient


def test_kl_div_gradient_at_identical_distributions():
    # KL is exactly 0 there and not clipped: d/dp = 1 + log(1) = 1, d/dq = -1
    p = _distributions(np.random.default_rng(3), (3, 9))
    for validate in (True, False):
        dp, dq = AD("torch", "float64").grads(
            lambda a, b, v=validate: kldiv.kl_div(a, b, validate=v), [p, p.copy()]
        )
        np.testing.assert_array_equal(dp, np.ones_like(p))
        np.testing.assert_array_equal(dq, -np.ones_like(p))


# Two normalised rows an ulp or so apart, whose KL (~1e-32) rounds to -7.8e-18: found by search.
_CLIPPED_P = [
    0.11542087004472033, 0.04992543185073952, 0.009110503787632184, 0.0047499283437556555,
    0.14687019718912173, 0.16461605755680006, 0.11001143582692875, 0.13192692992138155,
    0.09877178381904823, 0.16859686165987187,
]  # fmt: skip
_CLIPPED_Q = [
    0.11542087004472035, 0.04992543185073951, 0.009110503787632186, 0.004749928343755655,
    0.14687019718912175, 0.16461605755680003, 0.11001143582692877, 0.13192692992138158,
    0.09877178381904822, 0.16859686165987184,
]  # fmt: skip


@pytest.mark.parametrize("validate", [True, False])
def test_kl_div_gradient_where_the_value_rounds_below_zero(validate):
    p, q = np.array([_CLIPPED_P]), np.array([_CLIPPED_Q])
    assert float(kldiv.kl_div(p, q, validate=False)[0]) < 0  # the point still is one
    ad = AD("torch", "float64")
    got = ad.grads(lambda a, b: kldiv.kl_div(a, b, validate=validate), [p, q])
    if validate:
        # documented (docs/index.md, "Gradients"): the value is clipped to 0, and so is its
        # gradient, which on the simplex is itself a rounding's size here
        for grad in got:
            np.testing.assert_array_equal(grad, np.zeros_like(grad))
        return
    _assert_grads(got, _kl_expected(p, q), ad)


@pytest.mark.parametrize("spec", SPEC_PARAMS)
def test_validating_a_tensor_that_requires_grad_does_not_warn(spec):
    torch = pytest.importorskip("torch")
    p = _distributions(np.random.default_rng(5), (3, 6))
    xs = [torch.tensor(x, requires_grad=True) for x in spec.inputs(p, p[::-1].copy())]
    always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # torch's warn-once warnings, every time: order-independent
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            spec.call(True, *xs)
    finally:
        torch.set_warn_always(always)


# ---------------------------------------------------------------------------------------------
# 2. Autodiff against central finite differences (torch, float64)

_H = 1e-6  # balances truncation (h^2 f''') and rounding (eps |f| / h) at entries >= 2.5e-3


@st.composite
def _points(draw: Any, logits: bool) -> list[np.ndarray]:
    """Two float64 arrays of 1-3 rows of length 5-20: logits in [-5, 5], or strictly positive
    distributions, no entry below 0.05/n."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(5, 20)))
    if logits:
        return [draw(arrays(np.float64, shape, elements=st.floats(-5, 5))) for _ in range(2)]
    weights = st.floats(0.05, 1.0)
    return [_normalised(draw(arrays(np.float64, shape, elements=weights))) for _ in range(2)]


def _central_differences(rows: Callable[..., np.ndarray], inputs: list[np.ndarray]) -> list:
    """d sum(rows(*inputs)) / d inputs, by central differences.

    The rows are independent, so each input's perturbed copies go in one batched call per
    sign: batch row r*n + j is row r with entry j moved by +-h, beside row r of the others.
    """
    n_rows, n = inputs[0].shape
    which = np.repeat(np.arange(n_rows), n)
    bump = np.tile(np.eye(n), (n_rows, 1)) * _H
    grads = []
    for k in range(len(inputs)):
        plus = [x[which] + bump if i == k else x[which] for i, x in enumerate(inputs)]
        minus = [x[which] - bump if i == k else x[which] for i, x in enumerate(inputs)]
        step = (plus[k] - minus[k]).sum(axis=-1)  # 2h as the floats hold it
        grads.append(((rows(*plus) - rows(*minus)) / step).reshape(n_rows, n))
    return grads


@pytest.mark.parametrize("spec", SPEC_PARAMS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_gradient_matches_central_differences(spec, data):
    torch = pytest.importorskip("torch")
    inputs = data.draw(_points(spec.logits))[: spec.arity]

    def rows(*xs: np.ndarray) -> np.ndarray:
        # validate=False: a perturbed row sums to 1 +- h, which validation would refuse
        with torch.no_grad():
            out = spec.call(False, *(torch.from_numpy(x) for x in xs))
        return out.numpy()

    numeric = _central_differences(rows, inputs)
    # autodiff at the point itself with validate=False too: free variables, as the differences
    got = AD("torch", "float64").grads(lambda *xs: spec.call(False, *xs), inputs)
    for g, fd in zip(got, numeric, strict=True):
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 3. torch.autograd.gradcheck (and gradgradcheck, which goes through the same masks twice)


def _gradcheck_inputs(spec: Spec) -> list[Any]:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    if spec.logits:
        raw = [rng.normal(0.0, 2.0, size=(3, 7)) for _ in range(2)]
    else:
        raw = [_distributions(rng, (3, 7)) for _ in range(2)]
    return [torch.tensor(x, requires_grad=True) for x in raw[: spec.arity]]


@pytest.mark.parametrize("spec", SPEC_PARAMS)
def test_torch_gradcheck(spec):
    torch = pytest.importorskip("torch")
    # gradcheck perturbs single entries, off the simplex: validate=False
    assert torch.autograd.gradcheck(lambda *xs: spec.call(False, *xs), _gradcheck_inputs(spec))


@pytest.mark.parametrize("spec", SPEC_PARAMS)
def test_torch_gradgradcheck(spec):
    torch = pytest.importorskip("torch")
    fn = lambda *xs: spec.call(False, *xs)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, _gradcheck_inputs(spec))


# ---------------------------------------------------------------------------------------------
# 4. No NaN in any gradient at zeros: the where-NaN-gradient trap


def _point_masses() -> tuple[np.ndarray, np.ndarray]:
    """p a point mass; q the same point mass, then one spread over two entries: all the other
    entries are p_j = q_j = 0 or p_j = 0 < q_j."""
    p = np.zeros((2, 5))
    p[:, 0] = 1.0
    q = p.copy()
    q[1, :2] = 0.5
    return p, q


_ZERO_POINTS = {
    "p-zero": lambda: _with_zeros(shared=False, in_q=False),
    "p-and-q-zero": lambda: _with_zeros(shared=True, in_q=False),
    "point-mass": _point_masses,
}


@VALIDATE
@pytest.mark.parametrize("point", list(_ZERO_POINTS))
@pytest.mark.parametrize("spec", SPEC_PARAMS)
@pytest.mark.parametrize("ad", AD_PARAMS)
def test_no_nan_gradient_at_zeros(ad, spec, point, validate):
    p, q = _ZERO_POINTS[point]()
    inputs = spec.inputs(p, q)
    for i, g in enumerate(ad.grads(lambda *xs: spec.call(validate, *xs), inputs)):
        # every entry here has q_j > 0 or p_j = 0, so every documented gradient is finite
        assert np.isfinite(g).all(), f"argument {i}: {g}"


# ---------------------------------------------------------------------------------------------
# 5. kl_div_logits at logit gaps where the softmax underflows

_GAPS = [
    # a, b, d/da, d/db: p = (0, 1), q = (1/2, 1/2), KL = log 2 = d_1, so d/da = p*(d - KL) = 0
    pytest.param([0.0, 1e4], [0.0, 0.0], [0.0, 0.0], [0.5, -0.5], id="a-gap"),
    # p = (1/2, 1/2), q = (0, 1): d = (1e4 - log 2, -log 2), KL = 5e3 - log 2
    pytest.param([0.0, 0.0], [0.0, 1e4], [2500.0, -2500.0], [-0.5, 0.5], id="b-gap"),
    pytest.param([0.0, 1e4], [1e4, 0.0], [0.0, 0.0], [1.0, -1.0], id="opposite-gaps"),
]
_GAP_ADS = [
    pytest.param(AD("torch", "float64"), id="torch-float64"),
    pytest.param(AD("torch", "float32", rtol=1e-6, atol=1e-6), id="torch-float32"),
    pytest.param(AD("jax", "float64"), id="jax-x64-float64"),
    pytest.param(AD("jax", "float32", rtol=1e-6, atol=1e-6), id="jax-x64-float32"),
    pytest.param(AD("jax", "float32", x64=False, rtol=1e-5, atol=1e-5), id="jax-float32"),
]


@pytest.mark.parametrize(("a", "b", "da", "db"), _GAPS)
@pytest.mark.parametrize("ad", _GAP_ADS)
def test_kl_div_logits_gradient_at_large_gaps_is_finite(ad, a, b, da, db):
    got = ad.grads(lambda x, y: kldiv.kl_div_logits(x, y), [np.array(a), np.array(b)])
    for g in got:
        assert np.isfinite(g).all(), g
    _assert_grads(got, [np.array(da), np.array(db)], ad)
