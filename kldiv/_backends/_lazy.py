"""Fast paths run where nothing may raise: refused rows as NaN, as the lazy checks make them."""

from __future__ import annotations

import numpy as np

from kldiv import _dispatch
from kldiv import _validation as v
from kldiv._table import DIVERGENCES, NORMALISED
from kldiv._typing import Array, Namespace


def refused_as_nan(
    *blocks: Array,
    name: str,
    axes: tuple[int, ...],
    keepdims: bool,
    validate: bool,
    xp: Namespace,
) -> Array:
    """``name`` of concrete ``blocks`` of namespace ``xp``, by its fast path, checked as
    ``validate`` says, with the rows the checks refuse NaN instead of an error: for code that
    runs where nothing may raise (a Dask chunk)."""
    row = DIVERGENCES[name]
    impl = _dispatch.implementation(name, xp)
    options = {"axes": axes, "keepdims": keepdims}
    shape = tuple(np.broadcast_shapes(*(tuple(b.shape) for b in blocks)))
    if validate:
        try:
            v.check_values(row.inputs, row.checks - impl.fused, blocks, shape, axes, xp)
            out = impl.func(*blocks, validate=True, xp=xp, **options)
        except ValueError:  # some row is bad: which ones, the lazy forms of the checks say
            out = _dispatch.run(name, xp, *blocks, validate=False, **options)
        else:
            if out is not NotImplemented:
                return out
            # declined: the generic code, whose checks are the lazy ones below
            out = _dispatch.generic(name).func(*blocks, validate=False, xp=xp, **options)
    else:
        out = _dispatch.run(name, xp, *blocks, validate=False, **options)
    if validate and NORMALISED in row.checks:
        for b in blocks:
            bad = v.unnormalised_rows(v.expand_to(b, len(shape), xp), axes, keepdims, xp)
            out = xp.where(bad, xp.nan, out)
    if row.clips(validate):
        out = xp.where(out < 0, xp.zeros_like(out), out)
    return out
