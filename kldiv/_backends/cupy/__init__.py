"""The CuPy fast path: every divergence as one fused CUDA kernel launch.

Each function has the signature of its twin in :mod:`kldiv._agnostic` and the semantics of
the NumPy path, :mod:`kldiv._backends.numpy`. The arrays arrive checked by the public layer,
which also runs the value checks (these functions fuse none: no ``@fuses``). Each function
makes its input's device current and hands over to that device's
:class:`~kldiv._backends.cupy._launcher.Launcher`, which holds the arithmetic choices (which
kernel, which results are clipped at 0) and is the code the tests run on the CPU simulator.
``xp``, the public layer's namespace, is not needed: the launcher works with CuPy itself.
See docs/cuda.md.
"""

from __future__ import annotations

from kldiv._backends.cupy._device import on_device_of
from kldiv._typing import Array, Namespace


def rel_entr(p: Array, q: Array, *, validate: bool, xp: Namespace) -> Array:
    """As :func:`kldiv._agnostic.rel_entr`."""
    return on_device_of(p, lambda launcher: launcher.rel_entr(p, q, validate=validate))


def kl_div(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """As :func:`kldiv._agnostic.kl_div`."""
    return on_device_of(
        p, lambda launcher: launcher.kl_div(p, q, axes=axes, keepdims=keepdims, validate=validate)
    )


def kl_div_logits(
    a: Array, b: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """As :func:`kldiv._agnostic.kl_div_logits`."""
    return on_device_of(
        a,
        lambda launcher: launcher.kl_div_logits(
            a, b, axes=axes, keepdims=keepdims, validate=validate
        ),
    )


def entropy(
    p: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """As :func:`kldiv._agnostic.entropy`."""
    return on_device_of(
        p, lambda launcher: launcher.entropy(p, axes=axes, keepdims=keepdims, validate=validate)
    )


def cross_entropy(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """As :func:`kldiv._agnostic.cross_entropy`."""
    return on_device_of(
        p,
        lambda launcher: launcher.cross_entropy(
            p, q, axes=axes, keepdims=keepdims, validate=validate
        ),
    )


def js_div(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """As :func:`kldiv._agnostic.js_div`."""
    return on_device_of(
        p, lambda launcher: launcher.js_div(p, q, axes=axes, keepdims=keepdims, validate=validate)
    )


def hellinger(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """As :func:`kldiv._agnostic.hellinger`."""
    return on_device_of(
        p,
        lambda launcher: launcher.hellinger(p, q, axes=axes, keepdims=keepdims, validate=validate),
    )


def total_variation(
    p: Array, q: Array, *, axes: tuple[int, ...], keepdims: bool, validate: bool, xp: Namespace
) -> Array:
    """As :func:`kldiv._agnostic.total_variation`."""
    return on_device_of(
        p,
        lambda launcher: launcher.total_variation(
            p, q, axes=axes, keepdims=keepdims, validate=validate
        ),
    )


def softmax_kl_loss(
    pred: Array, target: Array, *, norm_target: bool, xp: Namespace
) -> tuple[Array, Array]:
    """As :func:`kldiv._agnostic.softmax_kl_loss`."""
    return on_device_of(
        pred, lambda launcher: launcher.softmax_kl_loss(pred, target, norm_target=norm_target)
    )
