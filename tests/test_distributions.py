"""``kldiv.distributions``: closed-form divergences against independent references.

The references: ``torch.distributions.kl_divergence`` on random batched parameters, a Monte
Carlo mean of ``log p(x) - log q(x)`` over samples of ``p`` (fixed seed, within four
standard errors), mpmath at 50 digits for near-identical parameters, and finite differences
for the gradients. Run as a script, this file prints the accuracy table of
docs/distributions.md (:func:`accuracy_rows`).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
import pytest

import kldiv
from kldiv import distributions as kd
from tests._helpers import assert_result, dtype_of, to_numpy

torch = pytest.importorskip("torch")
D = torch.distributions

# ---------------------------------------------------------------------------------------------
# One row per family: how to sample its parameters, and the torch distribution they make.

Sampler = Callable[[np.random.Generator, tuple[int, ...]], list[np.ndarray]]


def _tril(rng: np.random.Generator, batch: tuple[int, ...], k: int = 3) -> np.ndarray:
    a = np.tril(rng.normal(scale=0.4, size=(*batch, k, k)), -1)
    return a + np.eye(k) * rng.uniform(0.5, 2.0, size=(*batch, k))[..., None, :]


def _cov(rng: np.random.Generator, batch: tuple[int, ...]) -> np.ndarray:
    lower = _tril(rng, batch)
    return lower @ np.swapaxes(lower, -1, -2)


def _simplex(rng: np.random.Generator, batch: tuple[int, ...]) -> np.ndarray:
    x = rng.uniform(0.05, 1.0, size=(*batch, 3))
    return x / x.sum(axis=-1, keepdims=True)


def _uniform_params(rng: np.random.Generator, batch: tuple[int, ...]) -> list[np.ndarray]:
    low = rng.normal(scale=0.3, size=batch)
    return [low, low + rng.uniform(0.5, 2.0, size=batch)]


def _pos(low: float, high: float) -> Callable[[np.random.Generator, tuple[int, ...]], Any]:
    return lambda rng, batch: rng.uniform(low, high, size=batch)


def _loc(rng: np.random.Generator, batch: tuple[int, ...], k: int | None = None) -> np.ndarray:
    return rng.normal(size=batch if k is None else (*batch, k))


@dataclass(frozen=True)
class Family:
    name: str
    func: Callable[..., Any]  # kldiv's: the parameters of p, then those of q
    torch: Callable[..., Any]  # the torch distribution of one set of parameters
    sample: Sampler
    special: bool = False  # needs gammaln/digamma


def _each(*samplers: Callable[[np.random.Generator, tuple[int, ...]], Any]) -> Sampler:
    return lambda rng, batch: [s(rng, batch) for s in samplers]


def _vector_loc(rng: np.random.Generator, batch: tuple[int, ...]) -> np.ndarray:
    return _loc(rng, batch, 3)


def _vector_scale(rng: np.random.Generator, batch: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(0.3, 3.0, size=(*batch, 3))


def _vector_conc(rng: np.random.Generator, batch: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(0.3, 5.0, size=(*batch, 3))


def _vae(loc: Any, log_var: Any, *_: Any) -> Any:
    return kd.standard_normal(loc, log_var=log_var)


def _vae_torch(loc: Any, log_var: Any) -> Any:
    return D.Independent(D.Normal(loc, torch.exp(0.5 * log_var)), 1)


FAMILIES = [
    Family("normal", kd.normal, D.Normal, _each(_loc, _pos(0.3, 3.0))),
    Family("laplace", kd.laplace, D.Laplace, _each(_loc, _pos(0.3, 3.0))),
    Family("exponential", kd.exponential, D.Exponential, _each(_pos(0.3, 3.0))),
    Family("poisson", kd.poisson, D.Poisson, _each(_pos(0.3, 5.0))),
    Family("bernoulli", kd.bernoulli, lambda p: D.Bernoulli(probs=p), _each(_pos(0.05, 0.95))),
    Family(
        "bernoulli_logits",
        kd.bernoulli_logits,
        lambda a: D.Bernoulli(logits=a),
        _each(lambda rng, b: rng.normal(scale=3.0, size=b)),
    ),
    Family("geometric", kd.geometric, lambda p: D.Geometric(probs=p), _each(_pos(0.05, 0.95))),
    Family("uniform", kd.uniform, D.Uniform, _uniform_params),
    Family("gamma", kd.gamma, D.Gamma, _each(_pos(0.3, 5.0), _pos(0.3, 3.0)), special=True),
    Family("beta", kd.beta, D.Beta, _each(_pos(0.3, 5.0), _pos(0.3, 5.0)), special=True),
    Family("dirichlet", kd.dirichlet, D.Dirichlet, _each(_vector_conc), special=True),
    Family(
        "mvn",
        kd.mvn,
        lambda m, lower: D.MultivariateNormal(m, scale_tril=lower),
        _each(_vector_loc, _tril),
    ),
    Family(
        "mvn_cov",
        kd.mvn_cov,
        lambda m, cov: D.MultivariateNormal(m, covariance_matrix=cov),
        _each(_vector_loc, _cov),
    ),
    Family(
        "mvn_diag",
        kd.mvn_diag,
        lambda m, s: D.Independent(D.Normal(m, s), 1),
        _each(_vector_loc, _vector_scale),
    ),
    Family(
        "categorical",
        kd.categorical,
        lambda p: D.Categorical(probs=p),
        _each(_simplex),
    ),
    Family(
        "categorical_logits",
        kd.categorical_logits,
        lambda a: D.Categorical(logits=a),
        _each(lambda rng, b: rng.normal(size=(*b, 3))),
    ),
]
BY_NAME = {f.name: f for f in FAMILIES}
IDS = [f.name for f in FAMILIES]
# p is a batch of (4, 3), q of (3,): every result has shape (4, 3)
P_BATCH, Q_BATCH, OUT_SHAPE = (4, 3), (3,), (4, 3)


def _vae_reference(loc: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """The seed's VAE latent loss, ``-0.5*sum(1 + 2*log_sd - mu**2 - exp(2*log_sd))``."""
    log_sd = log_var / 2
    return -0.5 * np.sum(1 + 2 * log_sd - loc**2 - np.exp(2 * log_sd), axis=-1)


def _pair(family: Family, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return family.sample(rng, P_BATCH), family.sample(rng, Q_BATCH)


def _torch_kl(family: Family, pp: list[np.ndarray], qq: list[np.ndarray]) -> np.ndarray:
    """torch's divergence in float64, q's parameters broadcast to p's first (some of torch's
    divergences index with masks of one distribution's shape)."""
    qq = [
        np.broadcast_to(y, np.broadcast_shapes(x.shape, y.shape))
        for x, y in zip(pp, qq, strict=True)
    ]
    t = [torch.tensor(x, dtype=torch.float64) for x in (*pp, *qq)]
    p, q = family.torch(*t[: len(pp)]), family.torch(*t[len(pp) :])
    return torch.distributions.kl_divergence(p, q).numpy()


# ---------------------------------------------------------------------------------------------
# The seed's values.


def test_seed_normal():
    assert float(kd.normal(0, 1, 1, 2)) == pytest.approx(0.44314718, abs=5e-9)
    assert float(kd.normal(0, 1, 1, 2)) == pytest.approx(math.log(2) + 2 / 8 - 0.5, rel=1e-14)


@pytest.mark.parametrize("form", ["log_var", "log_scale", "scale"])
def test_seed_vae_formula(form):
    rng = np.random.default_rng(1)
    loc, log_var = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    spread = {"log_var": log_var, "log_scale": log_var / 2, "scale": np.exp(log_var / 2)}[form]
    got = kd.standard_normal(loc, **{form: spread})
    np.testing.assert_allclose(got, _vae_reference(loc, log_var), rtol=1e-12)
    keep = kd.standard_normal(loc, **{form: spread}, axis=0, keepdims=True)
    np.testing.assert_allclose(keep, _vae_reference(loc.T, log_var.T)[None, :], rtol=1e-12)


def test_vae_against_torch():
    rng = np.random.default_rng(2)
    loc, log_var = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    standard = D.Independent(D.Normal(torch.zeros(3, dtype=torch.float64), 1.0), 1)
    want = D.kl_divergence(_vae_torch(torch.tensor(loc), torch.tensor(log_var)), standard)
    np.testing.assert_allclose(kd.standard_normal(loc, log_var=log_var), want, rtol=1e-12)


def test_vae_needs_one_variance():
    with pytest.raises(TypeError, match="exactly one of"):
        kd.standard_normal(np.zeros(2))
    with pytest.raises(TypeError, match="got log_var, scale"):
        kd.standard_normal(np.zeros(2), log_var=np.zeros(2), scale=np.ones(2))


def test_vae_extremes_are_finite():
    """A tiny scale whose square underflows, and a huge log-variance, with gradients."""
    value = kd.standard_normal(np.zeros(1, np.float32), scale=np.full(1, 1e-30, np.float32))
    assert float(value) == pytest.approx(0.5 * (-1 + 60 * math.log(10)), rel=1e-6)
    for dtype, big in ((torch.float32, 80.0), (torch.float64, 700.0)):
        lv = torch.full((2,), big, dtype=dtype, requires_grad=True)
        out = kd.standard_normal(torch.zeros(2, dtype=dtype), log_var=lv)
        out.backward()
        assert torch.isfinite(out)
        assert torch.isfinite(lv.grad).all()
        assert float(lv.grad[0]) == pytest.approx(0.5 * math.expm1(big), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Every pair against torch.distributions.


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_against_torch(family, dtype):
    pp, qq = _pair(family, seed=3)
    # the reference from the same (rounded) parameters
    pp, qq = ([x.astype(dtype).astype(np.float64) for x in xs] for xs in (pp, qq))
    want = _torch_kl(family, pp, qq)
    args = [torch.tensor(x, dtype=getattr(torch, dtype)) for x in (*pp, *qq)]
    got = family.func(*args)
    tol = {"float32": 2e-5, "float64": 1e-10}[dtype]
    np.testing.assert_allclose(
        assert_result(got, args[0], dtype=getattr(torch, dtype), shape=OUT_SHAPE), want, rtol=tol
    )


def test_uniform_support():
    got = kd.uniform([0.0, 0.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.1, -2.0], [1.0, 2.0, 0.5])
    np.testing.assert_array_equal(got, [0.0, np.inf, np.inf])


def test_bernoulli_logits_at_1e4():
    for dtype in (np.float32, np.float64):
        a = np.array([1e4, -1e4, 1e4, 0.0], dtype)
        b = np.array([0.0, 1e4, 1e4 - 1, -1e4], dtype)
        want = [
            math.log(2),
            1e4 + float(_mp_softplus(-1e4)),
            float(_mp_bern_logits(1e4, 1e4 - 1)),
            float(_mp_bern_logits(0, -1e4)),
        ]
        got = kd.bernoulli_logits(a, b)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12)


# ---------------------------------------------------------------------------------------------
# Monte Carlo: the mean of log p(x) - log q(x) over samples of p.

_MC_SAMPLES = 100_000


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_monte_carlo(family):
    rng = np.random.default_rng(4)
    pp, qq = family.sample(rng, (3,)), family.sample(rng, (3,))
    if family.name == "uniform":  # q's support around p's, for a finite divergence
        qq = [pp[0] - rng.uniform(0, 1, 3), pp[1] + rng.uniform(0, 1, 3)]
    tp = [torch.tensor(x) for x in pp]
    tq = [torch.tensor(x) for x in qq]
    p, q = family.torch(*tp), family.torch(*tq)
    torch.manual_seed(5)
    x = p.sample((_MC_SAMPLES,))
    # samples along the last, contiguous axis, which NumPy sums pairwise
    ratio = np.ascontiguousarray((p.log_prob(x) - q.log_prob(x)).numpy().T)
    mean, se = ratio.mean(axis=-1), ratio.std(axis=-1, ddof=1) / math.sqrt(_MC_SAMPLES)
    got = np.asarray(family.func(*pp, *qq))
    # uniform's log-ratio is constant: se is the sum's rounding
    assert np.all(np.abs(got - mean) <= 4 * se + 1e-13 * np.abs(mean)), (got, mean, se)


# ---------------------------------------------------------------------------------------------
# Near-identical parameters against mpmath.


def _mp_softplus(x: Any) -> Any:
    with mpmath.workdps(60):
        return mpmath.log1p(mpmath.exp(mpmath.mpf(x)))


def _mp_bern(p: Any, q: Any) -> Any:
    p, q = mpmath.mpf(p), mpmath.mpf(q)
    return p * mpmath.log(p / q) + (1 - p) * mpmath.log((1 - p) / (1 - q))


def _mp_bern_logits(a: Any, b: Any) -> Any:
    """``(b - a)*sigmoid(-a) + softplus(-b) - softplus(-a)``: the Bernoulli divergence in
    logits, which mpmath's unbounded exponents evaluate at logits of 1e4."""
    with mpmath.workdps(60):
        a, b = mpmath.mpf(a), mpmath.mpf(b)
        return (b - a) / (1 + mpmath.exp(a)) + _mp_softplus(-b) - _mp_softplus(-a)


def _mp_normal(mp_, sp, mq, sq):
    mp_, sp, mq, sq = map(mpmath.mpf, (mp_, sp, mq, sq))
    return mpmath.log(sq / sp) + (sp**2 + (mp_ - mq) ** 2) / (2 * sq**2) - mpmath.mpf(1) / 2


def _mp_mvn(mp_, lp, mq, lq):
    lp, lq = mpmath.matrix(lp.tolist()), mpmath.matrix(lq.tolist())
    sp, sq = lp * lp.T, lq * lq.T
    d = mpmath.matrix(np.asarray(mp_).tolist()) - mpmath.matrix(np.asarray(mq).tolist())
    sq_inv = sq**-1
    k = len(mp_)
    trace = sum((sq_inv * sp)[i, i] for i in range(k))
    maha = (d.T * sq_inv * d)[0, 0]
    return (trace + maha - k + mpmath.log(mpmath.det(sq)) - mpmath.log(mpmath.det(sp))) / 2


def _mp_gamma(ap, bp, aq, bq):
    ap, bp, aq, bq = map(mpmath.mpf, (ap, bp, aq, bq))
    return (
        (ap - aq) * mpmath.digamma(ap)
        - mpmath.loggamma(ap)
        + mpmath.loggamma(aq)
        + aq * (mpmath.log(bp) - mpmath.log(bq))
        + ap * (bq - bp) / bp
    )


def _mp_dirichlet(cp, cq):
    cp, cq = [mpmath.mpf(x) for x in cp], [mpmath.mpf(x) for x in cq]
    p0, q0 = sum(cp), sum(cq)
    out = mpmath.loggamma(p0) - mpmath.loggamma(q0)
    for a, b in zip(cp, cq, strict=True):
        out += (
            mpmath.loggamma(b)
            - mpmath.loggamma(a)
            + (a - b) * (mpmath.digamma(a) - mpmath.digamma(p0))
        )
    return out


def _mp_laplace(mp_, bp, mq, bq):
    mp_, bp, mq, bq = map(mpmath.mpf, (mp_, bp, mq, bq))
    d = abs(mp_ - mq)
    return mpmath.log(bq / bp) + d / bq + bp / bq * mpmath.exp(-d / bp) - 1


@dataclass(frozen=True)
class Near:
    """Near-identical parameters of one family, and the 50-digit divergence."""

    family: str
    params: tuple[Any, ...]  # p's, then q's, float64
    reference: Callable[..., Any]  # mpmath of the same parameters


_L = np.array([[1.5, 0.0, 0.0], [0.3, 0.8, 0.0], [-0.2, 0.4, 1.2]])
_E = 1e-7  # the relative perturbation that makes the pairs near-identical
NEAR = [
    Near("normal", (0.3, 1.2, 0.3 + _E, 1.2 * (1 + _E)), _mp_normal),
    Near(
        "mvn_diag",
        ([0.3, -1.0], [1.2, 0.7], [0.3 + _E, -1.0], [1.2, 0.7 * (1 + _E)]),
        lambda a, b, c, d: _mp_normal(a[0], b[0], c[0], d[0]) + _mp_normal(a[1], b[1], c[1], d[1]),
    ),
    Near(
        "mvn",
        (
            np.array([0.3, -1.0, 0.5]),
            _L,
            np.array([0.3 + _E, -1.0, 0.5]),
            _L * (1 + _E * np.tri(3)),
        ),
        _mp_mvn,
    ),
    Near("laplace", (0.3, 1.2, 0.3 + _E, 1.2 * (1 + _E)), _mp_laplace),
    Near(
        "exponential",
        (1.3, 1.3 * (1 + _E)),
        lambda a, b: mpmath.log(mpmath.mpf(a) / b) + mpmath.mpf(b) / a - 1,
    ),
    Near(
        "poisson",
        (3.3, 3.3 * (1 + _E)),
        lambda a, b: mpmath.mpf(a) * mpmath.log(mpmath.mpf(a) / b) - a + mpmath.mpf(b),
    ),
    Near("bernoulli", (0.3, 0.3 * (1 + _E)), _mp_bern),
    Near("bernoulli_logits", (0.4, 0.4 + _E), _mp_bern_logits),
    Near("geometric", (0.3, 0.3 * (1 + _E)), lambda p, q: _mp_bern(p, q) / mpmath.mpf(p)),
    Near(
        "uniform",
        (0.0, 1.0, 0.0, 1.0 + _E),
        lambda a, b, c, d: mpmath.log((mpmath.mpf(d) - c) / (mpmath.mpf(b) - a)),
    ),
    Near("gamma", (2.5, 1.3, 2.5 * (1 + _E), 1.3 * (1 + _E)), _mp_gamma),
    Near("gamma", (0.05, 1.3, 0.05 * (1 - _E), 1.3), _mp_gamma),
    Near("gamma", (4e3, 1.3, 4e3 * (1 + _E), 1.3 * (1 - _E)), _mp_gamma),
    Near(
        "beta",
        (2.5, 0.7, 2.5 * (1 + _E), 0.7 * (1 - _E)),
        lambda a, b, c, d: _mp_dirichlet([a, b], [c, d]),
    ),
    Near("dirichlet", ([2.5, 1.5, 3.0], [2.5 * (1 + _E), 1.5, 3.0 * (1 - _E)]), _mp_dirichlet),
]


def _mp_vae(loc, log_var):
    return sum(
        (mpmath.expm1(mpmath.mpf(v)) - v + mpmath.mpf(m) ** 2) / 2
        for m, v in zip(loc, log_var, strict=True)
    )


NEAR.append(Near("standard_normal", ([_E, -_E], [_E, 2 * _E]), _mp_vae))


def _kldiv_near(case: Near) -> float:
    args = [np.asarray(x, dtype=np.float64) for x in case.params]
    if case.family == "standard_normal":
        return float(kd.standard_normal(args[0], log_var=args[1]))
    return float(getattr(kd, case.family)(*args))


def _torch_near(case: Near) -> float:
    args = [torch.tensor(np.asarray(x, dtype=np.float64)) for x in case.params]
    if case.family == "standard_normal":
        p = _vae_torch(*args)
        q = D.Independent(D.Normal(torch.zeros(2, dtype=torch.float64), 1.0), 1)
    else:
        family = BY_NAME[case.family]
        half = len(args) // 2
        p, q = family.torch(*args[:half]), family.torch(*args[half:])
    return float(D.kl_divergence(p, q))


def _reference_near(case: Near) -> Any:
    with mpmath.workdps(50):
        return case.reference(*case.params)


def _relative_error(value: float, reference: Any) -> float:
    with mpmath.workdps(50):
        return float(abs((mpmath.mpf(value) - reference) / reference))


@pytest.mark.parametrize("case", NEAR, ids=lambda c: c.family)
def test_near_identical_against_mpmath(case):
    reference = _reference_near(case)
    assert 0 < reference < 2 * _E  # near-identical indeed (uniform's is of order _E)
    assert _relative_error(_kldiv_near(case), reference) <= 1e-10


def accuracy_rows() -> list[tuple[str, float, float, float]]:
    """(family, 50-digit KL, kldiv's relative error, torch's) for :data:`NEAR`, float64: the
    table of docs/distributions.md."""
    rows = []
    for case in NEAR:
        reference = _reference_near(case)
        rows.append(
            (
                case.family,
                float(reference),
                _relative_error(_kldiv_near(case), reference),
                _relative_error(_torch_near(case), reference),
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Gradients: torch.autograd.gradcheck, and jax.grad against central finite differences.

_GRAD_FAMILIES = [f for f in FAMILIES if not f.name.startswith("categorical")]


def _small_pair(family: Family) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(6)
    return family.sample(rng, (2,)), family.sample(rng, ())


@pytest.mark.parametrize("family", _GRAD_FAMILIES, ids=[f.name for f in _GRAD_FAMILIES])
def test_torch_gradcheck(family):
    pp, qq = _small_pair(family)
    if family.name == "uniform":  # q's support strictly around p's: a smooth divergence
        qq = [np.min(pp[0]) - 0.5, np.max(pp[1]) + 0.5]
    args = tuple(torch.tensor(np.asarray(x), requires_grad=True) for x in (*pp, *qq))

    def func(*a):
        # only symmetric perturbations of a covariance stay covariances
        return family.func(*(_symmetric(x, i, family) for i, x in enumerate(a)))

    assert torch.autograd.gradcheck(func, args)


_MATRICES = (1, 3)  # the positions of the matrices of mvn and mvn_cov


def _symmetric(x: Any, i: int, family: Family) -> Any:
    if family.name != "mvn_cov" or i not in _MATRICES:
        return x
    swapped = x.mT if isinstance(x, torch.Tensor) else np.swapaxes(x, -1, -2)
    return (x + swapped) / 2


_SMOOTH_AT_EQUALITY = [f for f in _GRAD_FAMILIES if f.name != "uniform"]


@pytest.mark.parametrize("family", _SMOOTH_AT_EQUALITY, ids=[f.name for f in _SMOOTH_AT_EQUALITY])
def test_gradient_vanishes_at_p_equals_q(family):
    """KL's minimum, 0 at p == q, is where every branch switch and series meets: the value
    and every derivative must be exactly 0 there, never NaN (uniform's divergence has a
    corner there instead)."""
    pp, _ = _small_pair(family)
    p = [torch.tensor(np.asarray(x), requires_grad=True) for x in pp]
    q = [x.detach().clone().requires_grad_(True) for x in p]
    out = family.func(*p, *q)
    grads = torch.autograd.grad(out.sum(), [*p, *q])
    assert torch.all(out == 0)
    for g in grads:
        assert torch.all(g == 0), g


def test_torch_vmap_gives_nan_for_invalid():
    scales = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    out = torch.vmap(lambda s: kd.normal(0.0, s, 0.0, 1.0))(scales)
    np.testing.assert_allclose(out[:2], [0.0, math.log(0.5) + 2 - 0.5])
    assert torch.isnan(out[2])


@pytest.mark.parametrize("family", _GRAD_FAMILIES, ids=[f.name for f in _GRAD_FAMILIES])
def test_jax_grad(family):
    jax = pytest.importorskip("jax")
    pp, qq = _small_pair(family)
    if family.name == "uniform":
        qq = [np.min(pp[0]) - 0.5, np.max(pp[1]) + 0.5]
    params = [np.asarray(x, dtype=np.float64) for x in (*pp, *qq)]

    def total(*a):
        return float(np.sum(family.func(*a)))

    with jax.enable_x64(True):
        grads = jax.grad(
            lambda *a: jax.numpy.sum(family.func(*a)), argnums=tuple(range(len(params)))
        )(*(jax.numpy.asarray(x) for x in params))
    h = 1e-6
    for i, x in enumerate(params):
        numeric = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            if family.name == "mvn" and i in _MATRICES and index[-1] > index[-2]:
                continue  # above the diagonal: not read
            step = np.zeros_like(x)
            step[index] = h * max(1.0, abs(x[index]))
            up = [*params[:i], x + step, *params[i + 1 :]]
            down = [*params[:i], x - step, *params[i + 1 :]]
            up[i], down[i] = _symmetric(up[i], i, family), _symmetric(down[i], i, family)
            numeric[index] = (total(*up) - total(*down)) / (2 * step[index])
        analytic = np.asarray(grads[i])
        analytic = _symmetric(analytic, i, family)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# jax.jit, and every backend of the xp fixture.


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_jax_jit(family):
    jax = pytest.importorskip("jax")
    pp, qq = _pair(family, seed=7)
    args = [jax.numpy.asarray(np.asarray(x, dtype=np.float32)) for x in (*pp, *qq)]
    eager = to_numpy(family.func(*args))
    jitted = to_numpy(jax.jit(family.func)(*args))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_every_backend(xp, family):
    dtype = dtype_of(xp, "float32")
    pp, qq = _pair(family, seed=8)
    pp, qq = ([x.astype(np.float32) for x in xs] for xs in (pp, qq))
    args = [xp.asarray(x) for x in (*pp, *qq)]
    if family.special and xp.__name__ == "array_api_strict":
        with pytest.raises(TypeError, match=r"polygamma, which array_api_strict"):
            family.func(*args)
        return
    want = _torch_kl(family, [x.astype(np.float64) for x in pp], [x.astype(np.float64) for x in qq])
    got = assert_result(family.func(*args), args[0], dtype=dtype, shape=OUT_SHAPE)
    # JAX without x64 computes in float32, where the lgamma differences of the special
    # families lose a few more digits
    in_float32 = family.special and xp.__name__.startswith("jax")
    np.testing.assert_allclose(got, want, rtol=1e-4 if in_float32 else 2e-5)


# ---------------------------------------------------------------------------------------------
# Invalid parameters: ValueError naming the argument on eager arrays, NaN on lazy ones.

# (family, index of the bad argument, its name in the message, a bad value)
_INVALID = [
    ("normal", 1, "scale_p", -1.0),
    ("normal", 3, "scale_q", 0.0),
    ("laplace", 1, "scale_p", 0.0),
    ("exponential", 0, "rate_p", -2.0),
    ("poisson", 1, "rate_q", 0.0),
    ("bernoulli", 0, "p", 1.5),
    ("bernoulli", 1, "q", -0.1),
    ("geometric", 0, "p", 0.0),
    ("uniform", 1, "high_p - low_p", -5.0),
    ("gamma", 0, "concentration_p", -1.0),
    ("gamma", 3, "rate_q", 0.0),
    ("beta", 2, "alpha_q", -1.0),
    ("dirichlet", 1, "concentration_q", 0.0),
    ("mvn_diag", 3, "scale_q", -1.0),
]


def _with_bad(name: str, index: int, value: float) -> tuple[list[np.ndarray], tuple, np.ndarray]:
    """The parameters of a pair with one bad entry, its index, and where the result is NaN
    when it is not checked."""
    pp, qq = _pair(BY_NAME[name], seed=9)
    args = [x.copy() for x in (*pp, *qq)]
    batch_ndim = len(P_BATCH) if index < len(pp) else len(Q_BATCH)
    bad = args[index]
    where = ((1, 2, 0) if batch_ndim == 2 else (2, 0))[: bad.ndim]
    bad[where] = value
    mask = np.zeros(bad.shape, dtype=bool)
    mask[where] = True
    if bad.ndim > batch_ndim:  # a component of a distribution spoils the whole of it
        mask = mask.any(axis=-1)
    return args, where, np.broadcast_to(mask, OUT_SHAPE)


@pytest.mark.parametrize(("name", "index", "arg", "value"), _INVALID)
def test_invalid_raises(name, index, arg, value):
    args, where, _ = _with_bad(name, index, value)
    shown = str(where[0]) if len(where) == 1 else str(where)
    with pytest.raises(ValueError, match=rf"^{arg} must be .*; entry {re.escape(shown)} is "):
        BY_NAME[name].func(*args)
    with pytest.raises(ValueError, match=rf"^{arg} must be"):
        BY_NAME[name].func(*(torch.tensor(a) for a in args))


@pytest.mark.parametrize(("name", "index", "arg", "value"), _INVALID)
def test_invalid_is_nan_on_dask(name, index, arg, value):
    da = pytest.importorskip("dask.array")
    args, _, expected = _with_bad(name, index, value)
    out = to_numpy(BY_NAME[name].func(*(da.from_array(a, chunks=2) for a in args)))
    np.testing.assert_array_equal(np.isnan(out), expected)


def test_invalid_factor_raises():
    lower = _L.copy()
    lower[1, 1] = -0.5
    with pytest.raises(
        ValueError, match=r"scale_tril_q must be > 0 on its diagonal; diagonal entry 1"
    ):
        kd.mvn(np.zeros(3), _L, np.zeros(3), lower)
    with pytest.raises(ValueError, match="cov_p must be positive definite"):
        kd.mvn_cov(np.zeros(3), -np.eye(3), np.zeros(3), np.eye(3))


def test_invalid_is_nan_under_jit():
    jax = pytest.importorskip("jax")
    out = jax.jit(kd.normal)(0.0, jax.numpy.asarray([1.0, -1.0]), 0.0, 2.0)
    assert np.isfinite(out[0])
    assert np.isnan(out[1])
    lower = _L.copy()
    lower[1, 1] = -0.5
    stack = jax.numpy.asarray(np.stack([_L, lower]), dtype=np.float32)
    out = jax.jit(kd.mvn)(jax.numpy.zeros(3), stack, jax.numpy.zeros(3), jax.numpy.asarray(_L))
    assert np.isfinite(out[0])
    assert np.isnan(out[1])


def test_invalid_mvn_is_nan_on_dask():
    da = pytest.importorskip("dask.array")
    cov = _L @ _L.T
    covs = da.from_array(np.stack([cov, -cov, cov]), chunks=(2, 3, 3))
    zeros = da.zeros(3)
    out = to_numpy(kd.mvn_cov(zeros, covs, zeros, da.from_array(cov)))
    np.testing.assert_array_equal(np.isnan(out), [False, True, False])
    np.testing.assert_allclose(out[[0, 2]], 0.0, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Dtypes, shapes, delegation.


def test_integer_arrays_are_refused_python_numbers_are_not():
    with pytest.raises(TypeError, match="loc_p must have a real floating dtype"):
        kd.normal(np.arange(3), 1.0, 0.0, 1.0)
    with pytest.raises(TypeError, match="rate_q must have a real floating dtype"):
        kd.poisson(torch.ones(2), torch.ones(2, dtype=torch.int64))
    assert kd.normal(0, 1, 1, 2).dtype == np.float64
    assert kd.normal(torch.zeros(2, dtype=torch.float32), 1, [1, 1], 2).dtype == torch.float32


def test_mvn_shapes():
    with pytest.raises(ValueError, match="scale_tril_p must be square matrices"):
        kd.mvn(np.zeros(3), np.zeros((3, 2)), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="loc_q has 2 dimensions where loc_p has 3"):
        kd.mvn(np.zeros(3), np.eye(3), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="do not broadcast"):
        kd.mvn(np.zeros((2, 3)), np.eye(3), np.zeros((4, 3)), np.eye(3))


def test_mvn_reads_only_the_lower_triangle():
    junk = _L + np.triu(np.full((3, 3), 7.0), 1)
    loc = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(kd.mvn(loc, junk, -loc, junk * 0.9), kd.mvn(loc, _L, -loc, _L * 0.9))


def test_categorical_delegates(monkeypatch):
    calls = []
    original = kldiv._funcs.kl_div

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(kldiv._funcs, "kl_div", spy)
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    assert float(kd.categorical(p, q, base=2)) == 1.0
    assert calls == [{"axis": -1, "keepdims": False, "base": 2, "validate": True}]
    a, b = np.log([0.2, 0.8]), np.log([0.5, 0.5])
    assert kd.categorical_logits(a, b) == kldiv.kl_div_logits(a, b)
    # Python integers are numbers here, as in every family
    assert float(kd.categorical([1, 0], [0.5, 0.5])) == pytest.approx(math.log(2), rel=1e-15)
    assert float(kd.categorical_logits([0, 0], [0, 0])) == 0.0


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        print("| family | KL (mpmath, 50 digits) | kldiv rel. error | torch rel. error |")
        print("| --- | --- | --- | --- |")
        for family, value, ours, theirs in accuracy_rows():
            print(f"| `{family}` | {value:.3e} | {ours:.1e} | {theirs:.1e} |")
