"""``KLDivergence``: PuzzleLib's KL loss class, on arrays of any library.

PuzzleLib users swap ``from PuzzleLib.Cost import KLDivergence`` for
``from kldiv import KLDivergence`` and keep their training loops and their numbers.
:func:`softmax_kl_loss` is the same loss as a pure function, for code under ``jax.jit``,
``jax.vmap``, ``jax.grad`` or a ``torch.func`` transform, where a class that keeps state
cannot run.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np

from kldiv import _compat, _dispatch
from kldiv import _validation as v
from kldiv._dtypes import compute_dtype
from kldiv._table import LOGITS, NORMALISED, VALUES
from kldiv._typing import Array, Namespace

__all__ = ["KLDivergence", "KLDivergenceError", "softmax_kl_loss"]


class KLDivergenceError(ValueError, AssertionError):
    """A shape or value that the KL loss refuses.

    A ``ValueError`` like every other value check of kldiv, and an ``AssertionError`` too:
    PuzzleLib checks these shapes with ``assert``, so its code that catches
    ``AssertionError`` runs unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> from kldiv import KLDivergence, KLDivergenceError
    >>> try:
    ...     KLDivergence(maxlabels=4)(np.zeros((2, 5)), np.full((2, 5), 0.2))
    ... except AssertionError as exc:
    ...     print(isinstance(exc, KLDivergenceError), isinstance(exc, ValueError))
    True True
    """


@contextmanager
def _refusals() -> Iterator[None]:
    """Turn the ``ValueError`` of a shared check into a :class:`KLDivergenceError`."""
    try:
        yield
    except KLDivergenceError:
        raise
    except ValueError as exc:
        msg = str(exc)
        raise KLDivergenceError(msg) from None


def _check_maxlabels(maxlabels: Any) -> int | None:
    """``maxlabels`` as an int, or None; a float or a bool is refused, never truncated."""
    if maxlabels is None:
        return None
    if isinstance(maxlabels, (bool, np.bool_)):
        msg = f"maxlabels must be a positive int or None, not the bool {maxlabels!r}"
        raise TypeError(msg)
    try:
        count = operator.index(maxlabels)
    except TypeError:
        msg = (
            f"maxlabels must be a positive int or None, not {type(maxlabels).__name__} "
            f"{maxlabels!r}"
        )
        raise TypeError(msg) from None
    if count < 1:
        msg = (
            f"maxlabels must be a positive int or None, not {count}: it is the number of "
            "classes; pass None to leave the class count unchecked"
        )
        raise KLDivergenceError(msg)
    return count


def _holds_integers(obj: object) -> bool:
    """Whether a sequence that is no array holds integers (class labels), as NumPy reads it."""
    try:
        kind = np.asarray(obj).dtype.kind
    except (TypeError, ValueError):  # ragged or odd: left to v.namespace to refuse
        return False
    return kind in "iu"


def _namespace(pred: object, target: object) -> tuple[Namespace, Array, Array]:
    """The namespace and both arguments as its arrays; lists and scalars are converted.

    A sequence of floats takes ``pred``'s dtype, as in the other functions of kldiv; one of
    integers stays integer, so that ``div(pred, [0, 2, 1])`` reads labels.
    """
    if _compat.is_array_api_obj(target) or not _holds_integers(target):
        xp, (pred, target) = v.namespace(("pred", "target"), (pred, target))
        return xp, pred, target
    xp, (pred,) = v.namespace(("pred",), (pred,))
    return xp, pred, xp.asarray(target, device=_compat.device(pred))


def _check_shapes(
    pred: Array, target: Array, maxlabels: int | None, norm_target: bool, xp: Namespace
) -> None:
    if pred.ndim < 2:
        msg = f"pred must have a batch axis and a class axis, (N, C, ...); got shape {pred.shape}"
        raise KLDivergenceError(msg)
    if math.prod(pred.shape) == 0:
        msg = f"pred of shape {tuple(pred.shape)} is empty: no sample, or no class"
        raise KLDivergenceError(msg)
    if maxlabels is not None and pred.shape[1] != maxlabels:
        msg = (
            f"pred has {pred.shape[1]} classes along axis 1 (shape {tuple(pred.shape)}), "
            f"but maxlabels={maxlabels}"
        )
        raise KLDivergenceError(msg)
    if xp.isdtype(target.dtype, "integral"):
        # pred's shape without its class axis: (N,) for (N, C), (N, H, W) for (N, C, H, W)
        label_shape = (pred.shape[0], *pred.shape[2:])
        if tuple(target.shape) != label_shape:
            msg = (
                f"integer target (class labels) must have shape {label_shape}, pred's "
                f"without its class axis, for pred of shape {tuple(pred.shape)}; got "
                f"{tuple(target.shape)}"
            )
            raise KLDivergenceError(msg)
        if norm_target:
            msg = "normTarget=True takes raw scores; integer class labels need no softmax"
            raise KLDivergenceError(msg)
        return
    if not xp.isdtype(target.dtype, "real floating"):
        msg = f"target must hold real floating scores or integer labels, not {target.dtype}"
        raise TypeError(msg)
    if tuple(target.shape) != tuple(pred.shape):
        msg = (
            f"pred and target must have the same shape (batch first), but pred has "
            f"{tuple(pred.shape)} and target {tuple(target.shape)}"
        )
        raise KLDivergenceError(msg)


def _bad_label_rows(labels: Array, classes: int, xp: Namespace) -> Array:
    """Samples with a label outside ``[0, classes)``, over all their positions."""
    rows = xp.reshape(labels, (labels.shape[0], -1))
    return (xp.min(rows, axis=1) < 0) | (xp.max(rows, axis=1) >= classes)


def _check_values(
    pred: Array,
    target: Array,
    maxlabels: int | None,
    norm_target: bool,
    xp: Namespace,
) -> None:
    """Raise :class:`KLDivergenceError` at the first value that validation refuses.

    The shared checks answer for valid input from row reductions; the search that finds and
    names an entry runs only on input that has one to name.
    """
    sample_axes = tuple(range(1, pred.ndim))  # checked in place, so indices are pred's
    v.check_logits("pred", pred, sample_axes, xp)
    if xp.isdtype(target.dtype, "integral"):
        classes = int(pred.shape[1])
        if bool(xp.any(_bad_label_rows(target, classes, xp))):
            bad = (target < 0) | (target >= classes)
            index = v.first_true(bad, xp)
            value = int(target[index])
            limit = f"maxlabels={maxlabels}" if maxlabels else f"{classes} classes"
            msg = (
                f"target holds label {value} at index {v.show_index(index)}, outside "
                f"[0, {classes}) ({limit})"
            )
            raise KLDivergenceError(msg)
        return
    if norm_target:
        v.check_logits("target", target, sample_axes, xp)
        return
    v.check_probabilities("target", target, xp)
    v.check_normalised("target", target, sample_axes, xp)


def _one_hot(labels: Array, pred: Array, xp: Namespace) -> Array:
    classes = int(pred.shape[1])
    positions = math.prod(pred.shape[2:])
    labels = xp.reshape(labels, (pred.shape[0], 1, *pred.shape[2:]))
    shape = (1, classes) + (1,) * (pred.ndim - 2)
    classes_axis = xp.reshape(xp.arange(classes, device=_compat.device(pred)), shape)
    hits = labels == classes_axis
    if positions == 1:
        # 0 and 1 are exact in pred's dtype, and a target no wider than pred is no larger.
        return xp.astype(hits, pred.dtype)
    # In the compute dtype, not pred's: 1/(H*W) in float16 would move the error by 5e-4.
    work = compute_dtype(xp, pred.dtype, _compat.device(pred))
    return xp.astype(hits, work) / positions


def softmax_kl_loss(
    pred: Array,
    target: Array,
    /,
    *,
    maxlabels: int | None = None,
    norm_target: bool = False,
    validate: bool = True,
) -> tuple[Array, Array]:
    """The KL loss of :class:`KLDivergence` as a pure function: ``(error_sum, grad)``.

    No state, no Python number read from the arrays unless they can be read, so it runs
    under ``jax.jit``, ``jax.vmap``, ``jax.grad`` and ``torch.func`` transforms, where the
    class cannot.

    Parameters
    ----------
    pred : array_like
        Logits of shape ``(N, C, ...)``, the first axis the batch; softmax runs over all the
        other axes flattened together. An array of any library, or a (nested) sequence.
    target : array_like
        A distribution of ``pred``'s shape, raw scores with ``norm_target=True``, or integer
        class labels of ``pred``'s shape without axis 1, as in :class:`KLDivergence`.
    maxlabels : int, optional
        The number of classes: ``pred.shape[1]`` must equal it.
    norm_target : bool, optional
        Take the softmax of a raw target (``normTarget`` of the class).
    validate : bool, optional
        Check values (default). Arrays whose values can be read raise
        :class:`KLDivergenceError` at the first bad one. Lazy arrays (Dask, JAX or torch under
        tracing) cannot be read: there a sample that would fail the check gets a NaN grad
        row, and the error sum is NaN. With ``False`` nothing is checked and the formula's
        result comes back, except that a label outside ``[0, C)`` always gives NaN, as it
        would under tracing.

    Returns
    -------
    error_sum : array
        0-d: ``sum(y > 0 ? y*(log y - log s) : 0)`` over the whole batch, not divided by
        ``N``, in the compute dtype (float64 where the device has it, else float32), so that
        the sum over a large batch keeps its digits.
    grad : array
        ``(y - s) / N`` of ``pred``'s shape, dtype, library and device: minus the derivative
        of ``error_sum / N``, as the class returns it.

    Both are arrays of ``pred``'s library and follow its autodiff: ``jax.grad`` of
    ``error_sum`` gives ``-N * grad``, as does ``error_sum.backward()`` for a torch ``pred``
    that requires grad. The class detaches; this function does not.

    Raises
    ------
    KLDivergenceError
        Shapes that do not fit, ``maxlabels`` below 1 or not equal to ``pred.shape[1]``,
        and with ``validate`` on readable arrays the first refused value.
    TypeError
        A non-floating ``pred``, a target neither floating nor integer, a non-int
        ``maxlabels``.

    Examples
    --------
    >>> import numpy as np
    >>> from kldiv import softmax_kl_loss
    >>> pred = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    >>> error_sum, grad = softmax_kl_loss(pred, np.array([0, 0]), maxlabels=3)
    >>> round(float(error_sum) / 2, 6), grad.shape
    (0.549352, (2, 3))

    Under ``jax.jit``, a label that cannot be checked gives NaN for its sample:

    >>> import jax
    >>> import jax.numpy as jnp
    >>> loss = jax.jit(lambda p, t: softmax_kl_loss(p, t, maxlabels=3))
    >>> error_sum, grad = loss(jnp.zeros((2, 3)), jnp.array([0, 7]))
    >>> bool(jnp.isnan(error_sum)), jnp.isnan(grad).all(axis=1).tolist()
    (True, [False, True])
    """
    maxlabels = _check_maxlabels(maxlabels)
    with _refusals():
        xp, pred, target = _namespace(pred, target)
    v.check_floating("pred", pred, xp)
    _check_shapes(pred, target, maxlabels, norm_target, xp)
    readable = _compat.values_are_readable(pred) and _compat.values_are_readable(target)
    labels = bool(xp.isdtype(target.dtype, "integral"))
    n = int(pred.shape[0])
    pred_rows = xp.reshape(pred, (n, -1))
    # A fast path that checks a float target and pred as it computes is handed the checks, to
    # run where it flags something (the compiled loss kernel); labels are checked here.
    fused = (
        validate
        and readable
        and not labels
        and _dispatch.implementation("softmax_kl_loss", xp).fused >= _FUSED
    )

    def check() -> None:
        with _refusals():
            _check_values(pred, target, maxlabels, norm_target, xp)

    if validate and readable and not fused:
        check()
    # What was not checked and must not turn into a plausible number: the samples to be NaN.
    bad: Array | None = None
    result: _Loss | None = None
    if labels:
        if not (validate and readable):
            # An out-of-range label makes an all-zero one-hot row, whose error looks fine.
            bad = _bad_label_rows(target, int(pred.shape[1]), xp)
        if readable:
            result = _by_labels(pred_rows, xp.reshape(target, (n, -1)), bad, xp)
        if result is None:
            target = _one_hot(target, pred, xp)
    if result is None:
        result = _by_target(
            pred_rows,
            target,
            bad,
            validate,
            readable,
            labels,
            norm_target,
            xp,
            check if fused else None,
        )
    error_sum, grad, bad = result
    # Readable labels, in range as a rule: no where over the whole grad when none is out.
    if bad is not None and not (readable and not bool(xp.any(bad))):
        error_sum = xp.where(xp.any(bad), _scalar(xp.nan, error_sum, xp), error_sum)
        grad = xp.where(xp.reshape(bad, (n, 1)), _scalar(xp.nan, grad, xp), grad)
    return error_sum, xp.reshape(grad, tuple(pred.shape))


class _Loss(NamedTuple):
    """A loss's error sum and grad, and the samples to make NaN (None: none)."""

    error_sum: Array
    grad: Array
    bad: Array | None


def _by_labels(
    pred_rows: Array, label_rows: Array, bad: Array | None, xp: Namespace
) -> _Loss | None:
    """The loss against readable labels by a fast path that never makes the one-hot target
    (the compiled kernel), or None where there is none for these arrays."""
    by_labels = _dispatch.fast_path("softmax_kl_loss_labels", xp)
    if by_labels is None:
        return None
    out = by_labels(pred_rows, label_rows, xp=xp)
    if out is NotImplemented:
        return None
    error_sum, grad = out
    return _Loss(error_sum, grad, bad)


def _by_target(
    pred_rows: Array,
    target: Array,
    bad: Array | None,
    validate: bool,
    readable: bool,
    labels: bool,
    norm_target: bool,
    xp: Namespace,
    check: Callable[[], None] | None,
) -> _Loss:
    """The loss against a float target (labels made one-hot included), with ``bad`` grown by
    the samples that the checks on lazy arrays find bad, each computed on a stand-in."""
    n = int(pred_rows.shape[0])
    target_rows = xp.reshape(target, (n, -1))
    if validate and not readable:
        bad_pred = v.bad_logit_rows(pred_rows, (1,), xp)
        bad = bad_pred if bad is None else bad | bad_pred
        if norm_target:
            bad = bad | v.bad_logit_rows(target_rows, (1,), xp)
        elif not labels:
            bad_entries = v.bad_probability_rows(target_rows, (1,), xp)
            # Summed without them: inf - inf would warn where Dask computes with NumPy.
            summed = xp.where(
                xp.reshape(bad_entries, (n, 1)), _scalar(0.0, target_rows, xp), target_rows
            )
            bad = bad | bad_entries | v.unnormalised_rows(summed, (1,), False, xp)
    if bad is not None and not readable:
        # The samples to be NaN are computed on stand-ins (zero logits, a uniform target), so
        # that their values neither warn (Dask computes with NumPy, outside any errstate) nor
        # reach autodiff: their NaN comes from the mask in softmax_kl_loss alone.
        keep = xp.reshape(~bad, (n, 1))
        stand_in = 0.0 if norm_target else 1 / int(target_rows.shape[1])
        pred_rows = xp.where(keep, pred_rows, _scalar(0.0, pred_rows, xp))
        target_rows = xp.where(keep, target_rows, _scalar(stand_in, target_rows, xp))
    options: dict[str, Any] = {"norm_target": norm_target}
    if check is not None:
        options["check"] = check
    error_sum, grad = _dispatch.run("softmax_kl_loss", xp, pred_rows, target_rows, **options)
    return _Loss(error_sum, grad, bad)


# The checks of pred and a float target: a fast path that fuses them all is handed them
_FUSED = frozenset({VALUES, NORMALISED, LOGITS})


def _scalar(value: float, like: Array, xp: Namespace) -> Array:
    """A 0-d array of ``like``'s dtype and device, to broadcast in ``where``."""
    return xp.asarray(value, dtype=like.dtype, device=_compat.device(like))


def _refuse_traced(pred: object, target: object) -> None:
    """Raise ``TypeError`` for arrays under tracing, before any state changes.

    The class stores the error sum and the grad between calls and reads them as Python
    floats: a tracer stored there outlives its trace, and reading one raises deep inside JAX.
    Dask arrays are lazy too, but can be computed later, so they are welcome.
    """
    for name, a in (("pred", pred), ("target", target)):
        if not _compat.is_array_api_obj(a) or _compat.values_are_readable(a):
            continue
        if _compat.is_dask_namespace(_compat.array_namespace(a)):
            continue
        msg = (
            f"KLDivergence keeps state between calls (the accumulated error, the last "
            f"error and grad), so it cannot run on traced arrays, and {name} is one (under "
            "jax.jit, jax.vmap, jax.grad, torch.compile or a torch.func transform); call the "
            "pure function kldiv.softmax_kl_loss(pred, target, maxlabels=..., "
            "norm_target=...) inside the traced code, and accumulate outside it"
        )
        raise TypeError(msg)


def _detached(x: object) -> Any:
    """A torch tensor without its autograd graph; anything else as it is.

    The class returns the grad as a plain array, as PuzzleLib's is, and keeps error sums
    across batches: with their graphs attached, each batch's graph would stay alive.
    """
    if _compat.is_torch_array(x):
        return x.detach()  # type: ignore[attr-defined]
    return x


class KLDivergence:
    """KL divergence loss between ``softmax(pred)`` and a target distribution.

    The call and accumulation rules are PuzzleLib's (``PuzzleLib.Cost.KLDivergence``), so a
    training step written for it runs unchanged; the numerics are better: log-softmax in
    place of ``log(softmax)``, so a large logit gap gives a finite error where PuzzleLib's is
    ``inf``, and arithmetic in float64 where the device has it. Built on
    :func:`softmax_kl_loss`, which is the loss without state, for traced code.

    Parameters
    ----------
    maxlabels : int, optional
        The number of classes. When set, ``pred.shape[1]`` must equal it. An int, or an
        integer such as ``np.int64``; a float or a bool is a ``TypeError``.
    normTarget : bool, optional
        Take the softmax of a raw (real-valued) target, over the same axes as ``pred``'s.
    validate : bool, optional
        Check values: ``pred`` free of NaN and ``+inf``; a probability target non-negative,
        finite and normalised per sample; labels in range (default). A bad value raises
        :class:`KLDivergenceError`; on Dask arrays, which cannot be read, it makes the
        affected samples' grad rows and the error NaN instead. With ``False`` the formula's
        result comes back unchecked, except that a label out of range gives NaN. Not a
        PuzzleLib argument.

    Notes
    -----
    ``pred`` holds logits of shape ``(N, ...)``, the first axis the batch. The softmax runs
    over all other axes flattened together, ``(N, prod(shape[1:]))``. ``target`` is either

    - a distribution of ``pred``'s shape (raw scores with ``normTarget=True``), or
    - integer class labels of ``pred``'s shape without axis 1 (``(N,)`` for ``(N, C)``,
      ``(N, H, W)`` for ``(N, C, H, W)``), taken as one-hot along axis 1, divided by the
      number of positions ``prod(shape[2:])`` so that each sample's target sums to 1 like
      its softmax.

    Both may be arrays of any library or (nested) sequences, as for the other functions.

    For a batch, with ``s = softmax(pred)`` and ``y`` the target:

    - error: ``sum(y > 0 ? y*(log y - log s) : 0) / N``, a Python float;
    - grad: ``(y - s) / N``, of ``pred``'s shape, dtype, library and device, and never
      attached to an autograd graph (a torch ``pred`` that requires grad is detached).

    Mind the sign: like every PuzzleLib cost, the grad points *downhill*; it is
    ``-d(error)/d(pred)``. An optimiser that expects the gradient itself wants ``-grad``.

    Calls accumulate: ``getError()`` is the last batch's error, ``getMeanError()`` the sum of
    all batches' error sums divided by the number of samples seen, until
    ``resetAccumulator()``. ``validate(pred, target)`` returns an error without
    accumulating; ``getValError()`` returns it until the next training call, which clears
    it as PuzzleLib's does.

    The object keeps state, so it refuses arrays under tracing (``jax.jit``, ``jax.vmap``,
    ``torch.func``) with a ``TypeError`` and leaves its state as it was: use
    :func:`softmax_kl_loss` there.

    Examples
    --------
    >>> import numpy as np
    >>> from kldiv import KLDivergence
    >>> rng = np.random.default_rng(0)
    >>> scores = rng.standard_normal((10, 10)).astype(np.float32)
    >>> labels = rng.standard_normal((10, 10)).astype(np.float32)
    >>> div = KLDivergence(normTarget=True)
    >>> error, grad = div(scores, labels)
    >>> round(error, 6), grad.shape, grad.dtype
    (0.550854, (10, 10), dtype('float32'))
    >>> div.getMeanError() == error
    True

    Integer labels, with the class count checked:

    >>> div = KLDivergence(maxlabels=3)
    >>> pred = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    >>> error, grad = div(pred, np.array([0, 0]))
    >>> round(error, 6)
    0.549352
    """

    def __init__(
        self, maxlabels: int | None = None, normTarget: bool = False, *, validate: bool = True
    ) -> None:
        self.maxlabels = _check_maxlabels(maxlabels)
        self.normTarget = bool(normTarget)
        self.check_values = bool(validate)
        self.error: float | None = None
        self.valError: float | None = None
        self.grad: Array | None = None
        self._batch_sum: Array | None = None
        self._batch_size = 0  # the last batch's, which resetAccumulator leaves alone
        self._accum: Array | float = 0.0
        self.batchsize = 0
        self.numOfSamples = 0

    def __repr__(self) -> str:
        return f"KLDivergence(maxlabels={self.maxlabels!r}, normTarget={self.normTarget!r})"

    def __call__(self, pred: Array, target: Array, queryError: bool = True) -> Any:
        """``error, grad`` for a batch, or only ``grad`` with ``queryError=False``.

        The error is accumulated either way; with ``queryError=False`` it stays an array on
        the device until ``getError``/``getMeanError`` read it.
        """
        error_sum, grad = self._compute(pred, target)
        # Nothing above changed the state, so a refused batch leaves it as it was.
        self.valError = None  # PuzzleLib's reset() clears it on every training call
        self._batch_sum = error_sum
        self._accum = self._accum + error_sum
        self.batchsize = self._batch_size = int(grad.shape[0])
        self.numOfSamples += self.batchsize
        self.grad = grad
        self.error = None
        if not queryError:
            return grad
        return self.getError(), grad

    def validate(self, pred: Array, target: Array) -> float:
        """The error of a batch, without accumulating it (PuzzleLib's validation pass)."""
        error_sum, grad = self._compute(pred, target)
        self.valError = float(error_sum) / int(grad.shape[0])
        return self.valError

    def getError(self) -> float:
        """The error of the last batch: its error sum divided by its batch size."""
        if self._batch_sum is None:
            msg = "getError: no batch has been seen yet"
            raise RuntimeError(msg)
        if self.error is None:
            self.error = float(self._batch_sum) / self._batch_size
        return self.error

    def getMeanError(self) -> float:
        """Error sums of all batches since the last reset, divided by the samples seen."""
        if self.numOfSamples == 0:
            msg = "getMeanError: no sample has been seen since the accumulator was reset"
            raise RuntimeError(msg)
        total = float(self._accum)
        # Read once, kept as a number: a lazy (Dask) sum would otherwise hold every batch's
        # graph until the next reset, and be computed again at each read.
        self._accum = total
        return total / self.numOfSamples

    def getValError(self) -> float | None:
        """The error the last ``validate`` returned; None after a later training call."""
        return self.valError

    def resetAccumulator(self) -> None:
        """Forget the accumulated error sums and sample count."""
        self._accum = 0.0
        self.batchsize = 0
        self.numOfSamples = 0

    def _compute(self, pred: Array, target: Array) -> tuple[Array, Array]:
        _refuse_traced(pred, target)
        # Detached before the arithmetic, so that no graph is even built for it.
        return softmax_kl_loss(
            _detached(pred),
            _detached(target),
            maxlabels=self.maxlabels,
            norm_target=self.normTarget,
            validate=self.check_values,
        )
