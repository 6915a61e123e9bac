"""kldiv under function transforms and tracers: torch.func, meta and fake tensors, torch.compile.

Under these the value checks cannot run (``bool`` of a tensor raises, or has no value to
read), so :func:`kldiv._compat.values_are_readable` answers False and the public layer skips
them, as it does for JAX tracers and Dask. Every result is checked against NumPy float64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import scipy.special

import kldiv
from kldiv._compat import values_are_readable
from kldiv._table import DIVERGENCES
from tests._helpers import log_softmax, random_distributions
from tests._references import NAMES, call, inputs, reference

FUNCS = NAMES
TWO_ARGS = tuple(name for name in FUNCS if len(DIVERGENCES[name].inputs) == 2)


@pytest.fixture
def torch() -> Iterator[Any]:
    """torch, with dynamo's compiled code forgotten after each test, so that no test runs
    into the recompile limit of another's."""
    torch = pytest.importorskip("torch")
    yield torch
    torch._dynamo.reset()


def as_numpy(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy(), dtype=np.float64)


# values_are_readable itself


def test_readable_for_eager_arrays_of_every_library():
    assert values_are_readable(np.ones(3))
    assert values_are_readable(np.float64(1.0))


def test_readable_for_plain_tensors_and_parameters(torch):
    x = torch.ones(3)
    assert values_are_readable(x)
    assert values_are_readable(torch.ones(3, requires_grad=True))
    assert values_are_readable(torch.nn.Parameter(x))


def test_not_readable_for_meta_and_fake_tensors(torch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    assert not values_are_readable(torch.empty(3, device="meta"))
    with FakeTensorMode() as mode:
        fake = torch.empty(3)
        converted = mode.from_tensor(torch.ones(3))
        assert not values_are_readable(fake)
        assert not values_are_readable(converted)
    # A fake tensor reports device cpu and is no meta tensor: its type tells it apart.
    assert fake.device.type == "cpu"
    assert not fake.is_meta
    assert not values_are_readable(fake)


def test_not_readable_under_functorch_transforms(torch):
    seen: list[tuple[str, bool, bool]] = []
    outside = torch.ones(3)

    def probe(label: str) -> Callable[[Any], Any]:
        def f(t: Any) -> Any:
            # ``outside`` is a plain tensor, closed over: a transform is active all the same.
            seen.append((label, values_are_readable(t), values_are_readable(outside)))
            return (t * 2).sum()

        return f

    torch.vmap(probe("vmap"))(torch.ones(2, 3))
    torch.func.grad(probe("grad"))(torch.ones(3))
    torch.func.jacrev(probe("jacrev"))(torch.ones(3))
    torch.func.functionalize(probe("functionalize"))(torch.ones(3))
    torch.vmap(torch.func.grad(probe("vmap(grad)")))(torch.ones(2, 3))
    assert [label for label, *_ in seen] == [
        "vmap",
        "grad",
        "jacrev",
        "functionalize",
        "vmap(grad)",
    ]
    assert not any(readable or closed for _, readable, closed in seen), seen
    assert values_are_readable(outside)  # and readable again once the transforms are done


def test_not_readable_under_tracers(torch):
    from torch.fx.experimental.proxy_tensor import make_fx

    seen: list[bool] = []

    def f(t: Any) -> Any:
        seen.append(values_are_readable(t))
        return t * 2

    make_fx(f)(torch.ones(3))
    make_fx(f, tracing_mode="fake")(torch.ones(3))
    with pytest.warns(DeprecationWarning, match="torch.jit.trace"):
        torch.jit.trace(f, torch.ones(3), check_trace=False)
    assert seen == [False, False, False]


def test_not_readable_under_torch_compile(torch):
    def f(t: Any) -> Any:
        return t + 1 if values_are_readable(t) else t - 1

    compiled = torch.compile(f, backend="eager", fullgraph=True)
    assert compiled(torch.zeros(2)).tolist() == [-1.0, -1.0]
    assert f(torch.zeros(2)).tolist() == [1.0, 1.0]


def test_jax_arrays_readable_unless_traced():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    assert values_are_readable(jnp.ones(3))
    seen: list[bool] = []

    def f(x: Any) -> Any:
        seen.append(values_are_readable(x))
        return x

    jax.jit(f)(jnp.ones(3))
    assert seen == [False]


def test_dask_arrays_never_readable():
    da = pytest.importorskip("dask.array")
    assert not values_are_readable(da.ones(3))


# torch.vmap


@pytest.mark.parametrize("name", FUNCS)
def test_vmap_matches_numpy(torch, name):
    p, q = inputs(name, (6, 5))
    tp, tq = torch.asarray(p), torch.asarray(q)
    fn = getattr(kldiv, name)
    out = torch.vmap(fn)(tp) if name == "entropy" else torch.vmap(fn)(tp, tq)
    assert out.dtype == torch.float64
    assert tuple(out.shape) == ((6, 5) if name == "rel_entr" else (6,))
    np.testing.assert_allclose(as_numpy(out), reference(name, p, q), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", TWO_ARGS)
def test_vmap_against_one_unbatched_distribution(torch, name):
    p, q = inputs(name, (6, 5))
    out = torch.vmap(getattr(kldiv, name), in_dims=(0, None))(torch.asarray(p), torch.asarray(q[0]))
    expected = reference(name, p, np.broadcast_to(q[0], p.shape))
    np.testing.assert_allclose(as_numpy(out), expected, rtol=1e-12, atol=1e-15)


def test_vmap_of_bad_input_gives_nan_not_a_number(torch):
    # The checks cannot run under vmap, so a negative entry must not turn into a plausible
    # divergence: it is NaN, as with validate=False.
    p, q = inputs("kl_div", (3, 4))
    p[1, 2] = -0.1
    out = as_numpy(torch.vmap(kldiv.kl_div)(torch.asarray(p), torch.asarray(q)))
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], reference("kl_div", p, q)[[0, 2]], rtol=1e-12)


def test_eager_torch_is_still_checked(torch):
    p, q = inputs("kl_div", (3, 4))
    with pytest.raises(ValueError, match="negative"):
        kldiv.kl_div(-torch.asarray(p), torch.asarray(q))


# torch.func.grad and jacrev


def test_grad_of_summed_kl_div(torch):
    p, q = inputs("kl_div", (4, 5))
    tq = torch.asarray(q)
    g = torch.func.grad(lambda x: kldiv.kl_div(x, tq).sum())(torch.asarray(p))
    # d/dp sum(p*log(p/q)) = log(p/q) + 1, entry by entry
    np.testing.assert_allclose(as_numpy(g), np.log(p / q) + 1, rtol=1e-12, atol=1e-14)


def test_jacrev_of_kl_div(torch):
    p, q = inputs("kl_div", (4, 5))
    tq = torch.asarray(q)
    jac = as_numpy(torch.func.jacrev(lambda x: kldiv.kl_div(x, tq))(torch.asarray(p)))
    expected = np.zeros((4, 4, 5))
    for row in range(4):
        expected[row, row] = np.log(p[row] / q[row]) + 1
    np.testing.assert_allclose(jac, expected, rtol=1e-12, atol=1e-14)


def test_vmap_of_grad(torch):
    p, q = inputs("kl_div", (4, 5))
    g = torch.vmap(torch.func.grad(kldiv.kl_div))(torch.asarray(p), torch.asarray(q))
    np.testing.assert_allclose(as_numpy(g), np.log(p / q) + 1, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", FUNCS)
def test_functionalize_matches_numpy(torch, name):
    p, q = inputs(name, (3, 5))
    fn = torch.func.functionalize(lambda a, b: call(name, a, b))
    out = fn(torch.asarray(p), torch.asarray(q))
    np.testing.assert_allclose(as_numpy(out), reference(name, p, q), rtol=1e-12, atol=1e-15)


# meta and fake tensors


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", FUNCS)
def test_meta_tensors(torch, name, dtype):
    torch_dtype = getattr(torch, dtype)
    p = torch.empty(4, 5, device="meta", dtype=torch_dtype)
    out = call(name, p, torch.empty(4, 5, device="meta", dtype=torch_dtype))
    assert out.is_meta
    assert out.dtype == torch_dtype
    assert tuple(out.shape) == ((4, 5) if name == "rel_entr" else (4,))


@pytest.mark.parametrize("name", FUNCS)
def test_fake_tensor_mode(torch, name):
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    with FakeTensorMode():
        p = torch.empty(4, 5, dtype=torch.float32)
        out = call(name, p, torch.empty(4, 5, dtype=torch.float32))
    assert isinstance(out, FakeTensor)
    assert out.dtype == torch.float32
    assert out.device.type == "cpu"
    assert tuple(out.shape) == ((4, 5) if name == "rel_entr" else (4,))


def test_meta_keepdims_and_axes(torch):
    p = torch.empty(2, 3, 4, device="meta", dtype=torch.float64)
    out = kldiv.kl_div(p, p, axis=(1, 2), keepdims=True, base=2)
    assert out.is_meta
    assert tuple(out.shape) == (2, 1, 1)


# torch.compile. The aot_eager backend runs dynamo and then AOTAutograd, which traces the
# graph again with fake and functional tensors, but not inductor, whose C++ compile takes
# 1 to 20 s per function on two cores (it gives the same values, bit for bit on these inputs).


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", FUNCS)
def test_torch_compile_matches_eager_and_numpy(torch, name, dtype):
    p, q = inputs(name, (3, 7), seed=1)
    tp = torch.asarray(p, dtype=getattr(torch, dtype))
    tq = torch.asarray(q, dtype=getattr(torch, dtype))
    compiled = torch.compile(getattr(kldiv, name), backend="aot_eager")
    out = compiled(tp) if name == "entropy" else compiled(tp, tq)
    eager = call(name, tp, tq)
    assert out.dtype == tp.dtype
    # Compiled code runs the generic code, eager the NumPy path (kldiv._backends.torch): each
    # is exact to a few roundings of the result's dtype.
    close = {"float64": 1e-14, "float32": 1e-6}[dtype]
    torch.testing.assert_close(out, eager, rtol=close, atol=close / 10)
    # float32 inputs round p and q themselves, by 6e-8 relative.
    rtol = 1e-12 if dtype == "float64" else 1e-5
    reference_in = (as_numpy(tp), as_numpy(tq))
    expected = reference(name, *reference_in)
    np.testing.assert_allclose(as_numpy(out), expected, rtol=rtol, atol=1e-7)


def test_torch_compile_skips_the_checks(torch):
    # Compiled code cannot read values, so bad input gives NaN, where eager would raise: a
    # negative entry (row 0) and a row off 1 (row 2).
    p, q = inputs("kl_div", (3, 4))
    p[0, 0] = -1.0
    p[2] *= 1.01
    out = torch.compile(kldiv.kl_div, backend="eager")(torch.asarray(p), torch.asarray(q))
    out = as_numpy(out)
    assert np.isnan(out[[0, 2]]).all()
    np.testing.assert_allclose(out[1], reference("kl_div", p, q)[1], rtol=1e-12)


@pytest.mark.parametrize("name", FUNCS)
def test_torch_compile_fullgraph(torch, name):
    p, q = inputs(name, (3, 7), seed=1)
    tp, tq = torch.asarray(p), torch.asarray(q)
    compiled = torch.compile(lambda a, b: call(name, a, b), backend="eager", fullgraph=True)
    # the generic code compiled, against the NumPy path eager: a few float64 roundings apart
    torch.testing.assert_close(compiled(tp, tq), call(name, tp, tq), rtol=1e-14, atol=1e-15)


# the loss


def test_softmax_kl_loss_on_meta_tensors(torch):
    pred = torch.empty(4, 5, device="meta", dtype=torch.float32)
    for target, kwargs in [
        (torch.empty(4, 5, device="meta"), {}),
        (torch.empty(4, 5, device="meta"), {"norm_target": True}),
        (torch.empty(4, device="meta", dtype=torch.int64), {"maxlabels": 5}),
    ]:
        error_sum, grad = kldiv.softmax_kl_loss(pred, target, **kwargs)
        assert error_sum.is_meta
        assert grad.is_meta
        assert tuple(error_sum.shape) == ()
        assert tuple(grad.shape) == (4, 5)
        assert grad.dtype == torch.float32


def test_kl_divergence_class_refuses_meta_tensors(torch):
    # The class reads its error as a Python float, which a meta tensor has none of.
    div = kldiv.KLDivergence()
    pred = torch.empty(4, 5, device="meta")
    with pytest.raises(TypeError, match="softmax_kl_loss"):
        div(pred, pred)
    assert div.numOfSamples == 0


def _loss_reference(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    log_s = log_softmax(pred)
    error = float(np.sum(scipy.special.rel_entr(target, np.exp(log_s))))
    return error, (target - np.exp(log_s)) / pred.shape[0]


def test_torch_compile_of_softmax_kl_loss(torch):
    rng = np.random.default_rng(2)
    pred = rng.standard_normal((4, 6))
    target = random_distributions(rng, (4, 6))
    labels = np.array([0, 5, 2, 2])

    def step(p: Any, t: Any) -> tuple[Any, Any]:
        return kldiv.softmax_kl_loss(p, t, maxlabels=6)

    compiled = torch.compile(step, backend="aot_eager")
    error_sum, grad = compiled(torch.asarray(pred), torch.asarray(target))
    expected_error, expected_grad = _loss_reference(pred, target)
    np.testing.assert_allclose(float(error_sum), expected_error, rtol=1e-12)
    np.testing.assert_allclose(as_numpy(grad), expected_grad, rtol=1e-12, atol=1e-15)

    error_sum, grad = compiled(torch.asarray(pred), torch.asarray(labels))
    one_hot = np.eye(6)[labels]
    expected_error, expected_grad = _loss_reference(pred, one_hot)
    np.testing.assert_allclose(float(error_sum), expected_error, rtol=1e-12)
    np.testing.assert_allclose(as_numpy(grad), expected_grad, rtol=1e-12, atol=1e-15)


def test_grad_of_softmax_kl_loss(torch):
    rng = np.random.default_rng(3)
    pred = rng.standard_normal((4, 6))
    target = random_distributions(rng, (4, 6))
    tt = torch.asarray(target)
    g = torch.func.grad(lambda p: kldiv.softmax_kl_loss(p, tt)[0])(torch.asarray(pred))
    # The loss's grad is -d(error_sum / N)/d(pred).
    _, expected_grad = _loss_reference(pred, target)
    np.testing.assert_allclose(as_numpy(g), -4 * expected_grad, rtol=1e-12, atol=1e-15)
