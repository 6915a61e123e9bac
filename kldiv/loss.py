"""``KLDivergence``: PuzzleLib's KL loss class, on arrays of any library.

PuzzleLib users swap ``from PuzzleLib.Cost import KLDivergence`` for
``from kldiv import KLDivergence`` and keep their training loops and their numbers.
"""

from __future__ import annotations

import math
from typing import Any

from kldiv import _compat, _dispatch
from kldiv import _validation as v
from kldiv._dtypes import compute_dtype

Array = Any


class KLDivergence:
    """KL divergence loss between ``softmax(pred)`` and a target distribution.

    The call and accumulation rules are PuzzleLib's (``PuzzleLib.Cost.KLDivergence``), so a
    training step written for it runs unchanged; the numerics are better: log-softmax in
    place of ``log(softmax)``, so a large logit gap gives a finite error where PuzzleLib's is
    ``inf``, and arithmetic in float64 where the device has it.

    Parameters
    ----------
    maxlabels : int, optional
        The number of classes. When set, ``pred.shape[1]`` must equal it, and integer labels
        must lie in ``[0, maxlabels)``.
    normTarget : bool, optional
        Take the softmax of a raw (real-valued) target, over the same axes as ``pred``'s.
    validate : bool, optional
        Check values: ``pred`` free of NaN and ``+inf``; a probability target non-negative,
        finite and normalised per sample; labels in range (default). Skipped for lazy arrays
        (Dask, JAX under tracing), as in :func:`kldiv.kl_div`. Not a PuzzleLib argument.

    Notes
    -----
    ``pred`` holds logits of shape ``(N, ...)``, the first axis the batch. The softmax runs
    over all other axes flattened together, ``(N, prod(shape[1:]))``. ``target`` is either

    - a distribution of ``pred``'s shape (raw scores with ``normTarget=True``), or
    - integer class labels of ``pred``'s shape without axis 1 (``(N,)`` for ``(N, C)``,
      ``(N, H, W)`` for ``(N, C, H, W)``), taken as one-hot along axis 1, divided by the
      number of positions ``prod(shape[2:])`` so that each sample's target sums to 1 like
      its softmax.

    For a batch, with ``s = softmax(pred)`` and ``y`` the target:

    - error: ``sum(y > 0 ? y*(log y - log s) : 0) / N``, a Python float;
    - grad: ``(y - s) / N``, of ``pred``'s shape, dtype, library and device.

    Mind the sign: like every PuzzleLib cost, the grad points *downhill*; it is
    ``-d(error)/d(pred)``. An optimiser that expects the gradient itself wants ``-grad``.

    Calls accumulate: ``getError()`` is the last batch's error, ``getMeanError()`` the sum of
    all batches' error sums divided by the number of samples seen, until
    ``resetAccumulator()``. ``validate(pred, target)`` returns an error without
    accumulating.

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
        if maxlabels is not None and (isinstance(maxlabels, bool) or int(maxlabels) < 1):
            msg = f"maxlabels must be a positive int or None, not {maxlabels!r}"
            raise ValueError(msg)
        self.maxlabels = None if maxlabels is None else int(maxlabels)
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
        self._batch_sum = error_sum
        self._accum = self._accum + error_sum
        self.batchsize = self._batch_size = int(pred.shape[0])
        self.numOfSamples += self.batchsize
        self.grad = grad
        self.error = None
        if not queryError:
            return grad
        return self.getError(), grad

    def validate(self, pred: Array, target: Array) -> float:
        """The error of a batch, without accumulating it (PuzzleLib's validation pass)."""
        error_sum, _ = self._compute(pred, target)
        self.valError = float(error_sum) / int(pred.shape[0])
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
        return float(self._accum) / self.numOfSamples

    def getValError(self) -> float | None:
        """The error the last ``validate`` returned."""
        return self.valError

    def resetAccumulator(self) -> None:
        """Forget the accumulated error sums and sample count."""
        self._accum = 0.0
        self.batchsize = 0
        self.numOfSamples = 0

    def _compute(self, pred: Array, target: Array) -> tuple[Array, Array]:
        xp, (pred, target) = v.namespace(("pred", "target"), (pred, target))
        v.check_floating("pred", pred, xp)
        self._check_shapes(pred, target, xp)
        check = self.check_values and _compat.values_are_readable(pred)
        n = int(pred.shape[0])
        rows = (n, math.prod(pred.shape[1:]))
        sample_axes = tuple(range(1, pred.ndim))  # checked in place, so indices are pred's
        if check:
            v.check_logits("pred", pred, sample_axes, xp)
        if xp.isdtype(target.dtype, "integral"):
            target = self._one_hot(target, pred, check, xp)
        elif check:
            if self.normTarget:
                v.check_logits("target", target, sample_axes, xp)
            else:
                v.check_probabilities("target", target, xp)
                work = compute_dtype(xp, target.dtype, _compat.device(target))
                v.check_normalised("target", target, sample_axes, work, xp)
        error_sum, grad = _dispatch.backend(xp).softmax_kl_loss(
            xp.reshape(pred, rows), xp.reshape(target, rows), norm_target=self.normTarget, xp=xp
        )
        return error_sum, xp.reshape(grad, tuple(pred.shape))

    def _check_shapes(self, pred: Array, target: Array, xp: Any) -> None:
        if pred.ndim < 2:
            msg = (
                f"pred must have a batch axis and a class axis, (N, C, ...); got shape {pred.shape}"
            )
            raise ValueError(msg)
        if math.prod(pred.shape) == 0:
            msg = f"pred of shape {tuple(pred.shape)} is empty: no sample, or no class"
            raise ValueError(msg)
        if self.maxlabels is not None and pred.shape[1] != self.maxlabels:
            msg = (
                f"pred has {pred.shape[1]} classes along axis 1 (shape {tuple(pred.shape)}), "
                f"but maxlabels={self.maxlabels}"
            )
            raise ValueError(msg)
        if xp.isdtype(target.dtype, "integral"):
            # pred's shape without its class axis: (N,) for (N, C), (N, H, W) for (N, C, H, W)
            label_shape = (pred.shape[0], *pred.shape[2:])
            if tuple(target.shape) != label_shape:
                msg = (
                    f"integer target (class labels) must have shape {label_shape}, pred's "
                    f"without its class axis, for pred of shape {tuple(pred.shape)}; got "
                    f"{tuple(target.shape)}"
                )
                raise ValueError(msg)
            if self.normTarget:
                msg = "normTarget=True takes raw scores; integer class labels need no softmax"
                raise ValueError(msg)
            return
        if not xp.isdtype(target.dtype, "real floating"):
            msg = f"target must hold real floating scores or integer labels, not {target.dtype}"
            raise TypeError(msg)
        if tuple(target.shape) != tuple(pred.shape):
            msg = (
                f"pred and target must have the same shape (batch first), but pred has "
                f"{tuple(pred.shape)} and target {tuple(target.shape)}"
            )
            raise ValueError(msg)

    def _one_hot(self, labels: Array, pred: Array, check: bool, xp: Any) -> Array:
        classes = int(pred.shape[1])
        if check:
            bad = (labels < 0) | (labels >= classes)
            if bool(xp.any(bad)):
                index = v.first_true(bad, xp)
                value = int(labels[index])
                limit = f"maxlabels={self.maxlabels}" if self.maxlabels else f"{classes} classes"
                msg = (
                    f"target holds label {value} at index {v.show_index(index)}, outside "
                    f"[0, {classes}) ({limit})"
                )
                raise ValueError(msg)
        positions = math.prod(pred.shape[2:])
        labels = xp.reshape(labels, (pred.shape[0], 1, *pred.shape[2:]))
        shape = (1, classes) + (1,) * (pred.ndim - 2)
        classes_axis = xp.reshape(xp.arange(classes, device=_compat.device(pred)), shape)
        # In the compute dtype, not pred's: 1/(H*W) in float16 would move the error by 5e-4.
        work = compute_dtype(xp, pred.dtype, _compat.device(pred))
        one_hot = xp.astype(labels == classes_axis, work)
        return one_hot / positions if positions > 1 else one_hot
