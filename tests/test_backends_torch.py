"""The PyTorch bridge, kldiv._backends.torch: tensors on the NumPy (and CuPy) fast paths.

Values against the NumPy float64 reference on every dtype, gradients against
``torch.autograd.gradcheck`` in float64 (and double backward), and what is declined to the
generic code: unreadable tensors, bfloat16. CUDA tensors need a GPU (marked ``gpu``).
"""

from __future__ import annotations

import numpy as np
import pytest

import kldiv
from kldiv import _dispatch
from kldiv._table import DIVERGENCES
from tests._helpers import full_path_only, numpy_path_calls
from tests._references import call, inputs, reference

torch = pytest.importorskip("torch")
bridge = pytest.importorskip("kldiv._backends.torch")
import array_api_compat.torch as torch_xp  # noqa: E402 (after the importorskip)

BRIDGED = tuple(name for name in DIVERGENCES if hasattr(bridge, name))
TOLERANCE = {"float16": 2e-3, "bfloat16": 2e-2, "float32": 2e-6, "float64": 1e-12}


def tensors(name: str, shape: tuple[int, ...], dtype: str, seed: int = 0, **kwargs):
    p, q = inputs(name, shape, seed)
    return [torch.asarray(x, dtype=getattr(torch, dtype), **kwargs) for x in (p, q)]


def as_numpy(t) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


def test_the_bridge_takes_every_function_of_the_numpy_path():
    from kldiv._backends import numpy as numpy_path

    assert set(BRIDGED) == {name for name in DIVERGENCES if hasattr(numpy_path, name)}
    for name in BRIDGED:
        assert _dispatch.implementation(name, torch_xp).func is getattr(bridge, name)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("name", BRIDGED)
def test_values_on_every_dtype(name, dtype):
    p, q = tensors(name, (64, 33), dtype)
    out = call(name, p, q)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == p.dtype
    assert out.device == p.device
    expected = reference(name, as_numpy(p), as_numpy(q))
    np.testing.assert_allclose(as_numpy(out), expected, rtol=TOLERANCE[dtype], atol=1e-6)


@pytest.mark.parametrize("name", BRIDGED)
def test_cpu_tensors_reach_the_numpy_path(name, monkeypatch):
    calls = numpy_path_calls(monkeypatch, name)
    p, q = tensors(name, (70, 40), "float32")
    with kldiv.options(parallel_min=0), full_path_only():  # the bridge, not the short path
        call(name, p, q)
        call(name, p.requires_grad_(), q)
    assert calls == [np.ndarray, np.ndarray]


@pytest.mark.parametrize("name", BRIDGED)
def test_strided_broadcast_and_tuple_axes(name):
    p, q = tensors(name, (6, 40), "float64")
    p = p.T.contiguous().T  # column-major: rows are not contiguous
    assert not p.is_contiguous()
    np.testing.assert_allclose(
        as_numpy(call(name, p, q[0])),
        reference(name, as_numpy(p), as_numpy(q[0]).reshape(1, -1).repeat(6, 0)),
        rtol=1e-12,
    )
    if DIVERGENCES[name].reduces:
        p4, q4 = (x.reshape(6, 5, 8) for x in tensors(name, (6, 40), "float64"))
        got = call(name, p4, q4, axis=(1, 2), keepdims=True)
        assert tuple(got.shape) == (6, 1, 1)
        expected = reference(name, as_numpy(p4).reshape(6, 40), as_numpy(q4).reshape(6, 40))
        np.testing.assert_allclose(as_numpy(got).ravel(), expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", BRIDGED)
def test_the_inputs_are_read_in_place_and_never_changed(name, dtype):
    p, q = tensors(name, (8, 16), dtype)
    before = [x.clone() for x in (p, q)]
    out = call(name, p, q)
    for x, y in zip((p, q), before, strict=True):
        assert torch.equal(x, y)
    assert not np.shares_memory(out.numpy(), p.numpy())


@pytest.mark.parametrize("name", [n for n in BRIDGED if not DIVERGENCES[n].logits])
def test_bad_values_are_named_by_the_fused_checks(name):
    p, q = tensors(name, (4, 5), "float32")
    arg = DIVERGENCES[name].inputs[-1]
    bad = [p.clone(), q.clone()]
    bad[len(DIVERGENCES[name].inputs) - 1][2, 1] = -0.1
    with pytest.raises(ValueError, match=rf"^{arg} "):
        call(name, *bad)
    with pytest.raises(ValueError, match=rf"^{arg} "):
        call(name, *(x.requires_grad_() for x in bad))


# gradients: float64 against finite differences, and double backward


def grad_inputs(name: str, zeros: bool):
    p, q = tensors(name, (3, 6), "float64", seed=2)
    if zeros and not DIVERGENCES[name].logits:
        p[0, 1] = 0.0  # p = 0 < q
        p[1, 2] = q[1, 2] = 0.0  # both 0
        p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    return p.requires_grad_(), q.requires_grad_()


@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize("name", BRIDGED)
def test_gradcheck(name, zeros):
    p, q = grad_inputs(name, zeros)
    arity = len(DIVERGENCES[name].inputs)

    def fn(*args):
        return call(name, *args, validate=False)

    # finite differences step off the zeros' one side: there the checks compare one-sided
    # derivatives, so only the inputs away from zeros are perturbed
    if zeros:
        out = fn(*(p, q)[:arity])
        grads = torch.autograd.grad(out.sum(), (p, q)[:arity])
        for g in grads:
            assert not torch.isnan(g).any()
        return
    assert torch.autograd.gradcheck(fn, (p, q)[:arity])
    assert torch.autograd.gradgradcheck(fn, (p, q)[:arity])


@pytest.mark.parametrize("name", BRIDGED)
def test_gradients_equal_the_generic_codes(name):
    """The analytic backward against autodiff through the generic code, zeros included."""
    p, q = grad_inputs(name, zeros=True)
    arity = len(DIVERGENCES[name].inputs)
    args = (p, q)[:arity]
    fast = torch.autograd.grad(call(name, *args).sum(), args)
    generic = getattr(kldiv._agnostic, name)
    options = {"validate": True, "xp": torch_xp}
    if DIVERGENCES[name].reduces:
        options.update(axes=(1,), keepdims=False)
    value = generic(*args, **options)
    if DIVERGENCES[name].finish is not None:  # what the public layer does last (sqrt)
        value = kldiv._funcs._finish(value, DIVERGENCES[name], [], (1,), False, 1.0, torch_xp)
    slow = torch.autograd.grad(value.sum(), args)
    for f, s in zip(fast, slow, strict=True):
        torch.testing.assert_close(f, s, rtol=1e-10, atol=1e-12)


def test_one_distribution_against_a_batch_gets_its_gradient_summed():
    p, q = grad_inputs("kl_div", zeros=False)
    q1 = q[0].detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: kldiv.kl_div(a, b, validate=False), (p, q1))


def test_only_the_inputs_that_require_grad_get_one():
    p, q = tensors("kl_div", (3, 4), "float64")
    q.requires_grad_()
    kldiv.kl_div(p, q).sum().backward()
    assert p.grad is None
    assert q.grad is not None


# what is declined to the generic code


def test_no_grad_and_inference_mode_take_the_forward_alone():
    p, q = grad_inputs("kl_div", zeros=False)
    with torch.no_grad():
        assert kldiv.kl_div(p, q).grad_fn is None
    with torch.inference_mode():
        out = kldiv.kl_div(p.detach(), q.detach())
    np.testing.assert_allclose(out.numpy(), reference("kl_div", as_numpy(p), as_numpy(q)))


def test_meta_tensors_are_declined():
    p = torch.empty((3, 4), device="meta")
    assert bridge.kl_div(p, p, axes=(1,), keepdims=False, validate=True, xp=torch_xp) is (
        NotImplemented
    )
    assert kldiv.kl_div(p, p).device.type == "meta"


@pytest.mark.gpu
@pytest.mark.parametrize("name", BRIDGED)
def test_cuda_tensors_run_the_cupy_kernels(name):
    pytest.importorskip("cupy")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    p, q = tensors(name, (64, 33), "float32", device="cuda")
    out = call(name, p, q)
    assert out.device == p.device
    expected = reference(name, as_numpy(p.cpu()), as_numpy(q.cpu()))
    np.testing.assert_allclose(as_numpy(out.cpu()), expected, rtol=1e-5, atol=1e-6)
    pg, qg = (x.double().requires_grad_() for x in (p, q))
    arity = len(DIVERGENCES[name].inputs)
    assert torch.autograd.gradcheck(lambda *a: call(name, *a, validate=False), (pg, qg)[:arity])


def test_an_infinite_kl_of_logits_has_a_finite_gradient():
    """b = -inf where softmax(a) > 0: KL = inf, and its gradient 0 (the generic code's), never
    the NaN of inf - inf."""
    a = torch.tensor([[0.0, 1.0, 2.0], [0.5, 0.1, 0.2]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[0.0, -torch.inf, 1.0], [0.1, 0.2, 0.3]], dtype=torch.float64)
    b.requires_grad_()
    out = kldiv.kl_div_logits(a, b)
    assert torch.isinf(out[0])
    out.sum().backward()
    assert not torch.isnan(a.grad).any()
    assert not torch.isnan(b.grad).any()
    torch.testing.assert_close(a.grad[0], torch.zeros(3, dtype=torch.float64))
